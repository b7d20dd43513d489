"""`fleetpki platform apikey list|revoke` and `project delete` against a real `fleetpki serve`."""

from __future__ import annotations

import json
from typing import Any

from console_testing import Site

from fleetpki_testing import run_fleetpki


def cli(site: Site, *args: str, key: str | None = None) -> tuple[int, Any, str]:
    env = {"FLEETPKI_API_URL": site.url, "FLEETPKI_API_KEY": key or site.admin_key}
    rc, out, err = run_fleetpki("platform", *args, env=env)
    return rc, json.loads(out) if rc == 0 and "--json" in args else out, err


def test_apikey_list_revoke_and_project_delete(site: Site) -> None:
    key = site.project("cli-keys")
    made = site.api("POST", "/v1/projects/cli-keys/apikeys").json()["data"]  # CLI: test_cli.py
    rc, listed, err = cli(site, "apikey", "list", "--project", "cli-keys", "--json", key=key)
    assert rc == 0, err
    assert listed["total"] == 2 and made["id"] in {k["id"] for k in listed["list"]}
    # A project key may list but not revoke: one line, exit 1.
    rc, _, err = cli(site, "apikey", "revoke", made["id"], "--project", "cli-keys", key=key)
    assert rc == 1 and err.startswith("error: HTTP 403") and len(err.strip().splitlines()) == 1
    rc, out, err = cli(site, "apikey", "revoke", made["id"], "--project", "cli-keys")
    assert (rc, out.strip()) == (0, f"API key {made['id']} revoked"), err
    assert site.api("GET", "/v1/projects/cli-keys/devices", key=made["key"]).status_code == 401
    # Deleting a project wants --yes (a usage error without it).
    rc, _, err = cli(site, "project", "delete", "cli-keys")
    assert rc == 2 and "--yes" in err
    rc, gone, err = cli(site, "project", "delete", "cli-keys", "--yes", "--json")
    assert (rc, gone) == (0, {"deleted": "cli-keys"}), err
    assert site.api("GET", "/v1/projects/cli-keys").status_code == 404
