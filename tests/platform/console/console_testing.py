"""Helpers for the console's browser tests: the served site, signing in, screenshots."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from platform_testing import ServeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "build" / "screenshots"  # gitignored (/build/)
SIZES = {"1280x800": (1280, 800), "390x844": (390, 844)}


@dataclass
class Site:
    """The served platform: its console URL, the admin key, REST calls, its database."""

    server: ServeProcess
    data: Path
    printed: str = ""

    @property
    def url(self) -> str:
        return self.server.api_url

    @property
    def admin_key(self) -> str:
        return ServeProcess.ADMIN_KEY

    def api(self, method: str, path: str, json: Any = None, key: str | None = None) -> Any:
        return self.server.api(method, path, json, key)

    def project(self, slug: str) -> str:
        """Create project ``slug`` (REST, admin key); returns a new project API key."""
        created = self.api("POST", "/v1/projects", {"id": slug, "name": slug.title()})
        assert created.status_code == 201, created.text
        response = self.api("POST", f"/v1/projects/{slug}/apikeys")
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["key"])

    def upload(self, slug: str, pem: bytes, key: str | None = None) -> str:
        body = {"certFile": base64.b64encode(pem).decode()}
        response = self.api("POST", f"/v1/projects/{slug}/certificates", body, key)
        assert response.status_code == 201, response.text
        answer = response.json()
        return str((answer["data"] if "data" in answer else answer["list"][0])["id"])

    def sql(self, statement: str, **params: Any) -> None:
        """Run SQL on the platform's SQLite file (to age a session past its deadline)."""
        engine = sa.create_engine(f"sqlite:///{self.data / 'platform.sqlite3'}")
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(statement), params)
        finally:
            engine.dispose()

    def output_so_far(self) -> str:
        """What the running server has printed so far (stdout and stderr, without blocking)."""
        for stream in (self.server.proc.stdout, self.server.proc.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            while True:
                try:
                    chunk = os.read(stream.fileno(), 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self.printed += chunk.decode(errors="replace")
        return "\n".join(self.server.lines) + self.printed

    def stored_bytes(self) -> bytes:
        """Every byte of the platform's database files (SQLite file and its WAL)."""
        return b"".join(
            p.read_bytes() for p in sorted(self.data.glob("platform.sqlite3*")) if p.is_file()
        )


def sign_in(page: Any, site: Site, key: str) -> None:
    """Sign in through the sign-in form, as a person would."""
    page.goto(site.url + "/console/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def watch_dialogs(page: Any) -> list[str]:
    """Every alert/confirm/prompt the page opens (an XSS would open one); dismissed."""
    fired: list[str] = []

    def on_dialog(dialog: Any) -> None:
        fired.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return fired


def shoot(page: Any, name: str) -> None:
    """Full-page screenshots of the current page at laptop and phone sizes."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
