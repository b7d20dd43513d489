"""Refused uploads are shown next to the field; nothing is stored; a private key is never echoed.

Also: markup in subjects and names renders as text (no dialog fires, no element is made).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from console_testing import Site, sign_in, watch_dialogs
from cryptography.hazmat.primitives import hashes, serialization
from platform_testing import PKI, curl_whoami, issue, key_pem, pem, subject
from playwright.sync_api import expect

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.keys import KeyFileSigner, generate_private_key

SCRIPT = "<script>alert(1)</script>"
SUBJECT = "CN=\\<script\\>alert(1)\\</script\\>"  # RFC 4514 escapes < and > in a name
IMG = "<img src=x onerror=alert(1)>"


def add_ca(page: Any, file: Path, cert_type: str = "Root") -> None:
    page.get_by_role("link", name="Add CA Certificate").click()
    page.get_by_label("CA certificate file").set_input_files(str(file))
    page.get_by_label(cert_type).check()
    page.get_by_role("button", name="Add CA Certificate").click()


def key_lines(key: bytes) -> list[str]:
    """The base64 lines of a PEM private key: none may appear anywhere."""
    return [line for line in key.decode().splitlines() if line and not line.startswith("-----")]


def test_refusals_next_to_the_field_nothing_stored_key_never_echoed(
    site: Site, context: Any, tmp_path: Path, pki: PKI
) -> None:
    key = site.project("refusals")
    leaf = issue(pki.root_a, "refusals", "dev-1")
    secret = key_pem(leaf.key)
    secret_der = leaf.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files = {
        "leaf.crt.pem": (
            pem(leaf.cert),
            "is not a CA certificate (needs basicConstraints CA:TRUE)",
        ),
        "ca.key.pem": (secret, "the upload contains a private key: it was not stored"),
        "ca.key.der": (secret_der, "the upload contains a private key: it was not stored"),
        "bundle.pem": (pem(pki.root_a.certificate) + secret, "contains a private key"),
        "garbage.pem": (b"\x00\x01 this is not a certificate", "not a certificate in PEM or DER"),
    }
    page = context.new_page()
    sign_in(page, site, key)
    for name, (data, message) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        add_ca(page, path)
        error = page.locator("#certFile-error")
        expect(error).to_contain_text(message)
        # Next to the field: right below the file input, which says it is invalid.
        field = page.get_by_label("CA certificate file")
        expect(field).to_have_attribute("aria-invalid", "true")
        assert "certFile-error" in (field.get_attribute("aria-describedby") or "")
        html = page.content()
        for line in key_lines(secret):
            assert line not in html
        page.get_by_role("link", name="Cancel").click()
    # Nothing was stored: no CA certificate, and the key's bytes are nowhere in the database.
    listed = site.api("GET", "/v1/projects/refusals/certificates", key=key).json()
    assert listed["total"] == 0
    stored = site.stored_bytes()
    assert secret_der not in stored and all(
        line.encode() not in stored for line in key_lines(secret)
    )
    # Nor in what the server printed (it runs with --verbose).
    logs = site.output_so_far()
    assert all(line not in logs for line in key_lines(secret))


def markup_ca() -> CertificateAuthority:
    """A root CA whose common name is a script element."""
    key = generate_private_key()
    cert = profiles.ROOT.builder(
        subject=subject(None, SCRIPT), public_key=key.public_key(), issuer=None
    ).sign(key, hashes.SHA256())
    return CertificateAuthority("markup", cert, KeyFileSigner(key))


def test_markup_in_subjects_and_names_renders_as_text(
    site: Site, context: Any, tmp_path: Path
) -> None:
    key = site.project("markup")
    ca = markup_ca()
    ca_id = site.upload("markup", pem(ca.certificate), key)
    device = issue(ca, "markup", "xss-1")
    files = device.write(tmp_path)
    assert curl_whoami(site.server, files)[0] == 200
    page = context.new_page()
    dialogs = watch_dialogs(page)
    sign_in(page, site, key)
    # A device named like an element, through the console's own form.
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Devices").click()
    page.get_by_label("Device name").fill(IMG)
    page.get_by_role("button", name="Create device").click()
    expect(page.get_by_role("heading", name=IMG)).to_be_visible()
    # A refusal whose reason names the CA (disabled): the events page shows the subject too.
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Certificates").click()
    page.get_by_role("button", name=f"Disable {SUBJECT}").click()
    assert curl_whoami(site.server, files)[0] == 403
    pages = [
        "/console/p/markup/certificates",
        f"/console/p/markup/certificates/{ca_id}",
        f"/console/p/markup/certificates/{ca_id}/delete",
        "/console/p/markup/devices",
        f"/console/p/markup/devices?q={IMG[:4]}",
        "/console/p/markup/events",
    ]
    for path in pages:
        page.goto(site.url + path)
        text = page.locator("main").inner_text()
        assert SUBJECT in text or IMG in text, path
        assert page.locator("main script, main img").count() == 0, path
    # The decoded certificate shows the attribute's value itself, still as text.
    page.goto(site.url + f"/console/p/markup/certificates/{ca_id}")
    expect(page.locator(".attributes dd").first).to_have_text(SCRIPT)
    assert page.locator("main script").count() == 0
    page.goto(site.url + "/console/p/markup/devices")
    page.get_by_role("link", name=IMG).click()
    expect(page.locator("main")).to_contain_text(IMG)
    assert page.locator("img").count() == 0
    expect(page.locator("main")).to_contain_text(re.compile("never changes the certificate ID"))
    assert dialogs == []
