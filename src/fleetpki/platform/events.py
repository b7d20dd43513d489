"""Auth events and lastSeen times, written to the store in batches off the hot path."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from fleetpki.db import short_db_error
from fleetpki.platform.store import Store

log = logging.getLogger("fleetpki.platform")


class EventRecorder:
    """Queues events; a background thread writes them every ``flush_interval`` seconds.

    ``flush_interval=0`` writes each event before ``record`` returns. Readers of the store call
    ``flush`` first (Store.add_flusher), so this process always reads its own events.
    """

    def __init__(self, store: Store, flush_interval: float = 0.1) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._seen: dict[str, dt.datetime] = {}
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        store.add_flusher(self.flush)

    def record(self, event: dict[str, Any], seen_device: str | None = None) -> None:
        with self._lock:
            self._events.append(event)
            if seen_device is not None:
                self._seen[seen_device] = event["time"]
            if self.flush_interval > 0 and self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="fleetpki-events", daemon=True
                )
                self._thread.start()
        if self.flush_interval <= 0:
            self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is queued; a database failure is logged and the batch kept for later."""
        with self._flush_lock:
            with self._lock:
                events, self._events = self._events, []
                seen, self._seen = self._seen, {}
            if not events and not seen:
                return
            try:
                self.store.add_auth_events(events, seen)
            except Exception as exc:  # the database may be briefly away; keep the events
                log.warning("could not record %d auth events: %s", len(events), short_db_error(exc))
                with self._lock:
                    if len(self._events) < 100_000:
                        self._events[:0] = events
                    for key, value in seen.items():
                        self._seen.setdefault(key, value)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
