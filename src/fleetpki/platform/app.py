"""The platform as a library: one object that `fleetpki serve`, tests and transports share.

API (stable; transports and the CoAP endpoint build on it)::

    from fleetpki.platform.app import Platform

    platform = Platform.open(data_dir, db_url=None, server_names=None, server_ca=None)
    # data_dir: created 0700 if missing; holds platform.sqlite3 (unless db_url is given),
    #   server-ca.crt.pem (what devices trust), server.crt.pem and server.key.pem (0600).
    # db_url: e.g. "postgresql://user@host/db"; None = SQLite file in data_dir.
    platform.store            # fleetpki.platform.store.Store
    platform.store.create_project("acme", "Acme")           # -> {"id", "name", "createdAt"}
    platform.store.create_api_key("acme")                   # -> {"id", "key"} (key shown once)
    platform.store.upload_ca("acme", pem_or_der, "root")    # -> [certificate object, ...]
    platform.store.set_ca_enabled("acme", ca_id, False); platform.store.delete_ca("acme", ca_id)
    platform.store.upload_crl("acme", crl_pem_or_der)
    platform.store.create_device("acme", "name"); platform.store.update_device(
        "acme", device_id, name=..., enabled=...); platform.store.list_devices("acme")
    platform.store.list_auth_events("acme", outcome=None, transport=None, limit=100)
    platform.authenticator    # identity.Authenticator: authenticate(PresentedChain | None,
                              #   transport="coaps", peer="1.2.3.4:5") -> DeviceIdentity | Refusal
    platform.resources        # identity.DeviceResources: handle(identity, "GET", "whoami", b"")
    platform.server_cert_file, platform.server_key_file, platform.server_ca_file   # Paths
    platform.close()          # flushes pending auth events; also usable as a context manager

Errors are fleetpki.errors types (InputError, NotFoundError, ConflictError) with one-line
messages. Auth events are written in batches (``event_flush_interval`` seconds); the store's
readers flush this process's pending events first, so reads here are always complete.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from fleetpki import db
from fleetpki.errors import FleetPKIError
from fleetpki.platform.auth import PlatformAuthenticator
from fleetpki.platform.device_api import PlatformResources
from fleetpki.platform.events import EventRecorder
from fleetpki.platform.servercert import ensure_server_credentials
from fleetpki.platform.store import Store
from fleetpki.platform.trust import TrustCache

DB_FILE = "platform.sqlite3"


class Platform:
    """Store, authenticator, device resources and server credentials of one instance."""

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        *,
        server_names: list[str] | None = None,
        server_ca: tuple[Path, Path] | None = None,
        refresh_interval: float = 0.25,
        event_flush_interval: float = 0.1,
        credentials: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.trust = TrustCache(store, refresh_interval)
        self.recorder = EventRecorder(store, event_flush_interval)
        self.authenticator = PlatformAuthenticator(store, self.trust, self.recorder)
        self.resources = PlatformResources(store)
        if credentials:
            files = ensure_server_credentials(data_dir, server_names, server_ca)
            self.server_cert_file = files.cert_file
            self.server_key_file = files.key_file
            self.server_ca_file = files.ca_file

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        db_url: str | None = None,
        *,
        server_names: list[str] | None = None,
        server_ca: tuple[Path, Path] | None = None,
        refresh_interval: float = 0.25,
        event_flush_interval: float = 0.1,
        credentials: bool = True,
    ) -> Platform:
        """Open (creating on first use) the platform in ``data_dir``; raises FleetPKIError."""
        data_dir = Path(data_dir).expanduser()
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise FleetPKIError(f"cannot create data folder {data_dir}: {exc.strerror}") from None
        url = db_url or db.sqlite_url(data_dir / DB_FILE)
        store = Store(url)
        return cls(
            data_dir,
            store,
            server_names=server_names,
            server_ca=server_ca,
            refresh_interval=refresh_interval,
            event_flush_interval=event_flush_interval,
            credentials=credentials,
        )

    def close(self) -> None:
        """Write pending auth events and release the database."""
        self.recorder.close()
        self.store.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
