"""The seed's words, in a real browser: Credentials → Certificates → Add CA Certificate, then a
device over real mTLS (curl) appears under Devices, and disabling the CA refuses it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from console_testing import Site, sign_in, watch_dialogs
from platform_testing import curl_whoami
from playwright.sync_api import expect

from fleetpki_testing import Openssl, RunCli, seed_device_csr, seed_root


def seed_device(
    run_cli: RunCli, where: Path, root: tuple[Path, Path], project: str, cid: str
) -> tuple[Path, Path]:
    """A device key and CSR by openssl, its certificate signed by fleetpki with the seed root."""
    key, csr = seed_device_csr(where, project, cid)
    cert = where / "device.crt.pem"
    rc, _, err = run_cli(
        "ca", "import", "--name", "seed-root", "--cert", root[1], "--key", root[0],
        "--no-passphrase",
    )  # fmt: skip
    assert rc == 0, err
    rc, _, err = run_cli("sign", csr, "--ca", "seed-root", "--project", project, "--out", cert)
    assert rc == 0, err
    return cert, key


def test_seed_flow_in_the_browser(
    site: Site, context: Any, tmp_path: Path, openssl: Openssl, run_cli: RunCli
) -> None:
    root = seed_root(tmp_path)
    page = context.new_page()
    dialogs = watch_dialogs(page)

    # Sign in with the admin key, then create the project from the console.
    sign_in(page, site, site.admin_key)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    page.get_by_label("Slug").fill("seed")
    page.get_by_label("Name").fill("Seed fleet")
    page.get_by_role("button", name="Create project").click()

    # Credentials → Certificates → Add CA Certificate, with the seed's ca.crt.pem.
    nav = page.get_by_role("navigation", name="Project")
    expect(nav.get_by_text("Credentials")).to_be_visible()
    nav.get_by_role("link", name="Certificates").click()
    expect(page.get_by_role("heading", name="Certificates", exact=True)).to_be_visible()
    page.get_by_role("link", name="Add CA Certificate").click()
    expect(page.get_by_role("heading", name="Add CA Certificate")).to_be_visible()
    page.get_by_label("CA certificate file").set_input_files(str(root[1]))
    page.get_by_label("Root").check()
    page.get_by_role("button", name="Add CA Certificate").click()
    expect(page.get_by_role("status")).to_contain_text("CA certificate uploaded")
    card = page.locator(".ca-card", has_text="CN=Root CA")
    expect(card).to_contain_text("Root")
    expect(card).to_contain_text(re.compile(r"expires in 36(49|50) days"))
    expect(card).to_contain_text("Enabled")

    # A device made the seed's way connects over mTLS and is listed under Devices.
    files = seed_device(run_cli, tmp_path, root, "seed", "sensor-7")
    status, body = curl_whoami(site.server, files)
    assert status == 200, body
    assert json.loads(body)["certificateId"] == "sensor-7"
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Devices").click()
    row = page.get_by_role("row", name=re.compile("sensor-7"))
    expect(row).to_contain_text("sensor-7")
    expect(row).to_contain_text("Enabled")

    # Disabling the CA in the console refuses the device's next connection ...
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Certificates").click()
    page.get_by_role("button", name="Disable CN=Root CA").click()
    expect(page.get_by_role("status")).to_contain_text("CA certificate disabled")
    expect(page.locator(".ca-card", has_text="CN=Root CA")).to_contain_text("Disabled")
    status, body = curl_whoami(site.server, files)
    assert status == 403, body

    # ... and the refusal is under Auth events with its reason, newest first.
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Auth events").click()
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Refused")
    expect(rows.nth(0)).to_contain_text("CA certificate CN=Root CA is disabled in project 'seed'")
    expect(rows.nth(1)).to_contain_text("Accepted")
    page.get_by_label("Outcome").select_option("refused")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)

    # The device page shows the certificate it last presented and its events.
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Devices").click()
    page.get_by_role("link", name="sensor-7").click()
    presented = page.locator("section", has_text="Last presented certificate")
    expect(presented).to_contain_text("CN=Root CA")
    serial = openssl("x509", "-noout", "-serial", "-in", files[0]).stdout.strip().split("=")[1]
    shown = presented.locator("code").first.inner_text().replace(":", "")
    assert shown.lstrip("0") == serial.lstrip("0")
    assert dialogs == []
