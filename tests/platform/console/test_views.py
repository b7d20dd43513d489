"""How deadlines read: "expires in N days", a warning under 30 days, marked once past."""

from __future__ import annotations

import datetime as dt

from fleetpki.platform.console.views import Expiry, expiry, grouped, next_update, show_time

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_expiry_levels() -> None:
    assert expiry("2027-12-01T12:00:00Z", NOW) == Expiry("expires in 365 days", "ok")
    assert expiry("2026-12-31T12:00:00Z", NOW) == Expiry("expires in 30 days", "ok")
    assert expiry("2026-12-31T11:59:59Z", NOW) == Expiry("expires in 29 days", "warning")
    assert expiry("2026-12-02T11:00:00Z", NOW) == Expiry("expires in less than a day", "warning")
    assert expiry("2026-12-02T12:00:00Z", NOW) == Expiry("expires in 1 day", "warning")
    assert expiry("2026-12-01T11:00:00Z", NOW) == Expiry("expired today", "expired")
    assert expiry("2026-11-21T12:00:00Z", NOW) == Expiry("expired 10 days ago", "expired")


def test_crl_next_update_and_formats() -> None:
    assert next_update("2026-11-30T12:00:00Z", NOW) == Expiry("past, 1 day ago", "expired")
    assert next_update("2026-12-08T12:00:00Z", NOW).level == "ok"
    assert next_update(None, NOW) == Expiry("none given", "ok")
    assert show_time("2026-12-01T21:37:05Z") == "2026-12-01 21:37 UTC"
    assert show_time("2026-12-01T21:37:05Z", seconds=True) == "2026-12-01 21:37:05 UTC"
    assert show_time(None) == "—"
    assert grouped("abc123") == "AB:C1:23" and grouped("f00") == "0F:00"
