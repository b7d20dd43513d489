"""Who reaches what: CSRF tokens, other projects, signed-out and expired sessions, revoked keys."""

from __future__ import annotations

import re
from typing import Any

from console_testing import Site, sign_in
from platform_testing import PKI, pem
from playwright.sync_api import expect

SESSION = "fleetpki_session"


def session_cookie(context: Any) -> dict[str, Any]:
    return next(c for c in context.cookies() if c["name"] == SESSION)


def csrf_of(page: Any) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def test_forms_need_the_csrf_token(site: Site, context: Any, pki: PKI) -> None:
    key = site.project("csrf")
    ca_id = site.upload("csrf", pem(pki.root_a.certificate), key)
    page = context.new_page()
    sign_in(page, site, key)
    cookie = session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert key not in cookie["value"] and cookie["path"] == "/console"
    target = f"{site.url}/console/p/csrf/certificates/{ca_id}/enabled"
    for form in ({"enabled": "false"}, {"enabled": "false", "csrf": "forged-token-value"}):
        refused = context.request.post(target, form=form, max_redirects=0)
        assert refused.status == 403, form
        assert "did not come from this console" in refused.text()
    assert site.api("GET", f"/v1/projects/csrf/certificates/{ca_id}", key=key).json()["data"][
        "enabled"
    ]
    # The page's own token works (and proves the refusals above were about the token).
    done = context.request.post(
        target, form={"enabled": "false", "csrf": csrf_of(page)}, max_redirects=0
    )
    assert done.status == 303
    data = site.api("GET", f"/v1/projects/csrf/certificates/{ca_id}", key=key).json()["data"]
    assert data["enabled"] is False
    # The sign-in form has a token of its own.
    anonymous = context.browser.new_context()
    try:
        refused = anonymous.request.post(
            f"{site.url}/console/signin", form={"apiKey": key}, max_redirects=0
        )
        assert refused.status == 403
    finally:
        anonymous.close()


def test_other_projects_are_not_reachable_by_url(site: Site, context: Any, pki: PKI) -> None:
    mine = site.project("mine")
    theirs = site.project("theirs")
    their_ca = site.upload("theirs", pem(pki.root_b.certificate), theirs)
    device = site.api("POST", "/v1/projects/theirs/devices", {"name": "their-device"}, theirs)
    their_device = device.json()["data"]["id"]
    page = context.new_page()
    sign_in(page, site, mine)
    for path in (
        "/console/p/theirs/certificates",
        "/console/p/theirs/devices",
        "/console/p/theirs/settings",
        f"/console/p/theirs/certificates/{their_ca}",
        f"/console/p/mine/certificates/{their_ca}",
        f"/console/p/mine/certificates/{their_ca}/download",
        f"/console/p/mine/devices/{their_device}",
        f"/console/p/theirs/devices/{their_device}",
        "/console/p/no-such-project/events",
    ):
        response = page.goto(site.url + path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "Other Root" not in page.content() and "their-device" not in page.content()
    # Nor by a form: disabling their CA through my project's URL finds nothing.
    page.goto(site.url + "/console/p/mine/certificates")
    answer = context.request.post(
        f"{site.url}/console/p/mine/certificates/{their_ca}/enabled",
        form={"enabled": "false", "csrf": csrf_of(page)},
        max_redirects=0,
    )
    assert answer.status == 404
    found = site.api("GET", f"/v1/projects/theirs/certificates/{their_ca}", key=theirs)
    assert found.json()["data"]["enabled"] is True


def test_signed_out_and_expired_sessions_see_no_page(site: Site, context: Any, pki: PKI) -> None:
    key = site.project("sessions")
    site.upload("sessions", pem(pki.root_a.certificate), key)
    page = context.new_page()
    certificates = f"{site.url}/console/p/sessions/certificates"

    def shows_sign_in() -> None:
        page.goto(certificates)
        assert page.url.endswith("/console/signin")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert "Acme Root" not in page.content()

    sign_in(page, site, key)
    expect(page.locator(".ca-card")).to_contain_text("CN=Acme Root")
    old = session_cookie(context)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    shows_sign_in()
    # The old cookie, put back, is worth nothing: the session ended on the server.
    context.add_cookies([old])
    shows_sign_in()

    # Idle and absolute deadlines, aged in the database.
    for column in ("expires_at", "ends_at"):
        sign_in(page, site, key)
        page.goto(certificates)
        expect(page.locator(".ca-card")).to_contain_text("CN=Acme Root")
        site.sql(f"UPDATE console_sessions SET {column} = '2000-01-01 00:00:00.000000'")
        shows_sign_in()


def test_revoked_key_ends_its_sessions_and_cannot_sign_in(site: Site, context: Any) -> None:
    site.project("revoke")
    admin = context.new_page()
    sign_in(admin, site, site.admin_key)
    admin.get_by_role("link", name="Revoke", exact=True).click()  # in the project list
    admin.goto(f"{site.url}/console/p/revoke/settings")
    admin.get_by_role("button", name="Create API key").click()
    key = admin.get_by_role("textbox", name="New API key").input_value()
    key_id = re.search(r"Key ID (\w+)", admin.locator(".key-once").inner_text())
    assert key_id is not None and key.startswith("fpk_")
    # Someone signs in with the new key, in another browser context.
    other_context = context.browser.new_context()
    try:
        user = other_context.new_page()
        sign_in(user, site, key)
        expect(user.get_by_role("heading", name="Certificates", exact=True)).to_be_visible()
        assert site.api("GET", "/v1/projects/revoke/certificates", key=key).status_code == 200
        # The admin revokes it, after a confirmation.
        admin.goto(f"{site.url}/console/p/revoke/settings")
        admin.get_by_role("link", name=f"Revoke key {key_id.group(1)}").click()
        expect(admin.get_by_role("heading", name="Revoke API key")).to_be_visible()
        admin.get_by_role("button", name="Revoke API key").click()
        expect(admin.get_by_role("status")).to_contain_text("API key revoked")
        # At once: the open session is over, the API refuses it, signing in again fails.
        user.reload()
        assert user.url.endswith("/console/signin")
        assert site.api("GET", "/v1/projects/revoke/certificates", key=key).status_code == 401
        user.get_by_label("API key").fill(key)
        with user.expect_response(re.compile(r"/console/signin$")) as answer:
            user.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        expect(user.get_by_role("alert")).to_contain_text("This key is not valid")
    finally:
        other_context.close()
