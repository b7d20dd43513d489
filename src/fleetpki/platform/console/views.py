"""How the console shows things: times, expiry ("expires in N days"), notices after a change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

WARN_DAYS = 30  # a CA certificate expiring sooner than this is shown as a warning


@dataclass(frozen=True, slots=True)
class Expiry:
    """A deadline as a person reads it: the text and how urgent it is (ok, warning, expired)."""

    text: str
    level: str


def parse_time(value: str | None) -> dt.datetime | None:
    """An API time (``2026-12-01T21:37:00Z``) as an aware datetime; None stays None."""
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def show_time(value: str | None, seconds: bool = False) -> str:
    """``2026-12-01 21:37 UTC`` (or an em dash when there is no time)."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{moment:%Y-%m-%d %H:%M} UTC"


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def expiry(value: str | None, now: dt.datetime | None = None, warn_days: int = WARN_DAYS) -> Expiry:
    """ "expires in N days" (a warning under ``warn_days``), or "expired N days ago"."""
    moment = parse_time(value)
    if moment is None:
        return Expiry("no expiry", "ok")
    now = now or dt.datetime.now(dt.UTC)
    left = moment - now
    if left.total_seconds() <= 0:
        ago = (now - moment).days
        return Expiry("expired today" if ago == 0 else f"expired {_days(ago)} ago", "expired")
    days = left.days
    text = "expires in less than a day" if days == 0 else f"expires in {_days(days)}"
    return Expiry(text, "warning" if days < warn_days else "ok")


def next_update(value: str | None, now: dt.datetime | None = None) -> Expiry:
    """A CRL's nextUpdate: "past" (expired level) once it has gone by."""
    moment = parse_time(value)
    if moment is None:
        return Expiry("none given", "ok")
    now = now or dt.datetime.now(dt.UTC)
    if moment <= now:
        return Expiry(f"past, {_days((now - moment).days)} ago", "expired")
    return Expiry(f"in {_days((moment - now).days)}", "ok")


def grouped(hex_text: str, size: int = 2) -> str:
    """``ab:cd:ef`` from ``abcdef``: fingerprints and serials as openssl prints them."""
    text = hex_text if len(hex_text) % 2 == 0 else "0" + hex_text
    return ":".join(text[i : i + size] for i in range(0, len(text), size)).upper()


def short_id(value: str | None) -> str:
    return "—" if not value else value[:8]


FILTERS: dict[str, Any] = {
    "when": show_time,
    "expiry": expiry,
    "next_update": next_update,
    "grouped": grouped,
    "short_id": short_id,
}

# Notices shown after a change (the ?done= code of the redirect; never text from the URL).
NOTICES = {
    "signed-out": "You are signed out.",
    "uploaded": "CA certificate uploaded.",
    "enabled": "CA certificate enabled: devices it signed are accepted from the next connection.",
    "disabled": "CA certificate disabled: devices it signed are refused from the next connection.",
    "deleted": "CA certificate deleted.",
    "crl-uploaded": "CRL uploaded: its revocations count from the next connection.",
    "device-created": "Device created: the first certificate with this name as its ID claims it.",
    "device-renamed": "Device renamed.",
    "device-enabled": "Device enabled.",
    "device-disabled": "Device disabled: it is refused from its next connection.",
    "device-deleted": "Device deleted.",
    "key-revoked": "API key revoked: it no longer works, and its console sessions have ended.",
    "project-created": "Project created.",
    "project-deleted": "Project deleted.",
}
