"""/docs with the network off, and a screenshot of every console page at laptop and phone size
(written to build/screenshots/, not committed)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console_testing import SCREENSHOTS, SIZES, Site, shoot, sign_in, watch_dialogs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from platform_testing import PKI, curl_whoami, issue, pem, subject
from playwright.sync_api import expect

from fleetpki import profiles
from fleetpki.keys import generate_private_key

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def offline(context: Any) -> list[str]:
    """Abort every request that would leave the machine; returns the list of those tried."""
    tried: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK:
            request_route.continue_()
        else:
            tried.append(url)
            request_route.abort("internetdisconnected")

    context.route("**/*", route)
    return tried


def short_lived_root() -> Any:
    key = generate_private_key()
    return profiles.ROOT.builder(
        subject=subject(None, "Short-lived Root"), public_key=key.public_key(), issuer=None, days=12
    ).sign(key, hashes.SHA256())


def test_docs_render_offline(site: Site, context: Any) -> None:
    tried = offline(context)
    page = context.new_page()
    page.goto(site.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "fleetpki platform management API"
    )
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert page.locator(".opblock").count() > 20
    assert tried == []
    shoot(page, "docs")


def test_screenshots_of_every_page(site: Site, context: Any, pki: PKI, tmp_path: Path) -> None:
    tried = offline(context)
    key = site.project("acme-fleet")
    site.upload("acme-fleet", pem(pki.inter_a.certificate) + pem(pki.root_a.certificate))
    crl = pki.inter_a.sign_crl([(0x1234, dt.datetime.now(dt.UTC), "keyCompromise")], crl_number=1)
    site.api(
        "POST",
        "/v1/projects/acme-fleet/crls",
        {"crlFile": base64.b64encode(crl.public_bytes(Encoding.DER)).decode()},
        key,
    )
    site.upload("acme-fleet", pem(short_lived_root()), key)  # shows the "expires soon" warning
    for number in range(3):
        files = issue(pki.inter_a, "acme-fleet", f"sensor-{number:03d}").write(
            tmp_path / str(number)
        )
        assert curl_whoami(site.server, files)[0] == 200
    stranger = issue(pki.stranger, "acme-fleet", "intruder-1").write(tmp_path / "x")
    assert curl_whoami(site.server, stranger)[0] == 403
    site.api("POST", "/v1/projects/acme-fleet/devices", {"name": "pump-7"}, key)

    page = context.new_page()
    dialogs = watch_dialogs(page)
    page.goto(site.url + "/console/")
    shoot(page, "signin")
    sign_in(page, site, site.admin_key)
    shoot(page, "projects")
    page.get_by_role("link", name="Acme-Fleet", exact=True).click()
    expect(page.locator(".ca-card")).to_have_count(3)
    expect(page.locator(".ca-card", has_text="Short-lived Root")).to_contain_text("Expires soon")
    shoot(page, "certificates")
    page.get_by_role("link", name="Add CA Certificate").click()
    garbage = tmp_path / "leaf.crt.pem"
    garbage.write_bytes(pem(issue(pki.root_a, "acme-fleet", "leaf").cert))
    page.get_by_label("CA certificate file").set_input_files(str(garbage))
    page.get_by_role("button", name="Add CA Certificate").click()
    expect(page.locator("#certFile-error")).to_be_visible()
    shoot(page, "add-ca-certificate")
    page.get_by_role("link", name="Cancel").click()
    page.locator(".ca-card").first.get_by_role("link", name="Details").click()
    expect(page.get_by_role("heading", name="Extensions")).to_be_visible()
    shoot(page, "certificate")
    page.get_by_role("link", name="Delete").click()
    shoot(page, "certificate-delete")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Devices").click()
    expect(page.locator("table.list tbody tr")).to_have_count(4)
    shoot(page, "devices")
    page.get_by_role("link", name="sensor-001").click()
    expect(page.locator("section", has_text="Last presented certificate")).to_contain_text(
        "Acme Factory"
    )
    shoot(page, "device")
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Auth events").click()
    expect(page.locator("table.events tbody tr")).to_have_count(4)
    shoot(page, "auth-events")
    page.get_by_role("navigation", name="Project").get_by_role(
        "link", name="Project settings"
    ).click()
    page.get_by_role("button", name="Create API key").click()
    shoot(page, "project-settings")
    page.goto(site.url + "/console/p/acme-fleet/delete")
    shoot(page, "project-delete")
    page.goto(site.url + "/console/p/acme-fleet/devices/no-such-device")
    shoot(page, "not-found")
    assert tried == [] and dialogs == []
    names = {p.name for p in SCREENSHOTS.glob("*.png")}
    for page_name in ("signin", "certificates", "devices", "auth-events", "project-settings"):
        assert all(f"{page_name}-{size}.png" in names for size in SIZES)


def test_core_flow_without_javascript(site: Site, browser: Any, pki: PKI, tmp_path: Path) -> None:
    key = site.project("no-script")
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, site, key)
        page.get_by_role("link", name="Add CA Certificate").click()
        root = tmp_path / "root.pem"
        root.write_bytes(pem(pki.root_a.certificate))
        page.get_by_label("CA certificate file").set_input_files(str(root))
        page.get_by_role("button", name="Add CA Certificate").click()
        expect(page.get_by_role("status")).to_contain_text("CA certificate uploaded")
        page.get_by_role("button", name="Disable CN=Acme Root").click()
        expect(page.locator(".ca-card")).to_contain_text("Disabled")
        page.get_by_role("navigation", name="Project").get_by_role(
            "link", name="Project settings"
        ).click()
        # The copy button needs JavaScript: without it, it stays hidden and the slug is selectable.
        expect(page.get_by_role("button", name="Copy")).to_have_count(0)
        expect(page.get_by_label(re.compile("Project slug"))).to_have_value("no-script")
    finally:
        context.close()


def test_keyboard_and_copy_button(site: Site, browser: Any) -> None:
    key = site.project("keyboard")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    try:
        page = context.new_page()
        page.goto(site.url + "/console/signin")
        page.keyboard.type(key)  # the key field has the focus
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Certificates", exact=True)).to_be_visible()
        # Tab order: skip link, brand, sign out, the navigation, then the page's button.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        for _ in range(12):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Add CA Certificate":
                break
        else:
            raise AssertionError("Add CA Certificate is not reachable by Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"  # focus is visible
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Add CA Certificate")).to_be_visible()
        page.goto(site.url + "/console/p/keyboard/settings")
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == "keyboard"
    finally:
        context.close()
