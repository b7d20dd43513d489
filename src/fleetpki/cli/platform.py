"""`fleetpki platform ...`: a client of the management API of `fleetpki serve`.

The API key comes from --api-key-file or $FLEETPKI_API_KEY (never from argv); the admin key is
used the same way for admin calls (project create, apikey create).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import typer

from fleetpki.cli.common import JsonOption, console, print_json
from fleetpki.errors import FleetPKIError
from fleetpki.files import read_file

ENV_URL = "FLEETPKI_API_URL"
ENV_KEY = "FLEETPKI_API_KEY"
ENV_PROJECT = "FLEETPKI_PROJECT"

app = typer.Typer(
    help="Client of the platform's management API (projects, CA certificates, devices, events).\n\n"
    "Example: FLEETPKI_API_KEY=... fleetpki platform upload-ca root.pem --project acme",
    no_args_is_help=True,
)
project_app = typer.Typer(help="Projects (admin key).", no_args_is_help=True)
apikey_app = typer.Typer(
    help="Per-project API keys (create and revoke: admin key).", no_args_is_help=True
)
ca_app = typer.Typer(help="CA certificates of a project.", no_args_is_help=True)
device_app = typer.Typer(help="Devices of a project.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(apikey_app, name="apikey")
app.add_typer(ca_app, name="ca")
app.add_typer(device_app, name="device")


class _Client:
    url = os.environ.get(ENV_URL, "http://127.0.0.1:8080")
    key_file: Path | None = None

    def key(self) -> str:
        if self.key_file is not None:
            lines = read_file(self.key_file, limit=4096).decode().strip().splitlines()
            if lines:
                return lines[0].strip()
            raise FleetPKIError(f"API key file {self.key_file} is empty")
        key = os.environ.get(ENV_KEY, "").strip()
        if not key:
            raise FleetPKIError(f"no API key: use --api-key-file or ${ENV_KEY}")
        return key

    def call(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        import httpx

        try:
            response = httpx.request(
                method,
                self.url.rstrip("/") + path,
                json=body,
                params=params,
                headers={"x-api-key": self.key()},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise FleetPKIError(f"cannot reach the platform at {self.url}: {exc}") from None
        if response.status_code == 204:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise FleetPKIError(
                f"{self.url}: HTTP {response.status_code}, not a JSON answer"
            ) from None
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise FleetPKIError(f"HTTP {response.status_code}: {error.get('message', data)}")
        return data


CLIENT = _Client()
ProjectOption = typer.Option(
    ..., "--project", "-p", envvar=ENV_PROJECT, help="Project slug (or $FLEETPKI_PROJECT)."
)


@app.callback()
def _options(
    url: str = typer.Option(
        CLIENT.url, "--url", envvar=ENV_URL, help="Management API URL (or $FLEETPKI_API_URL)."
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="File holding the API key (else $FLEETPKI_API_KEY).",
        dir_okay=False,
    ),
) -> None:
    CLIENT.url = url
    CLIENT.key_file = api_key_file


def _show(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print_json(data)
    else:
        for line in lines:
            console.print(line, markup=False)


def _ca_line(ca: dict[str, Any]) -> str:
    content = ca["certificateContent"]
    state = "enabled " if ca["enabled"] else "disabled"
    until = content["notAfter"]
    return f"{ca['id']}  {ca['certType']:<12} {state}  {content['subject']}  (until {until})"


@project_app.command("create")
def project_create(
    slug: str = typer.Argument(..., help="Project slug: lowercase letters, digits, '-'."),
    name: str | None = typer.Option(None, "--name", help="Display name."),
    json_output: bool = JsonOption,
) -> None:
    """Create a project (admin key). Example: fleetpki platform project create acme --name Acme"""
    data = CLIENT.call("POST", "/v1/projects", {"id": slug, "name": name})["data"]
    _show(data, json_output, [f"project {data['id']} created"])


@project_app.command("list")
def project_list(json_output: bool = JsonOption) -> None:
    """List projects. Example: fleetpki platform project list --json"""
    data = CLIENT.call("GET", "/v1/projects")
    _show(data, json_output, [f"{p['id']}  {p['name']}" for p in data["list"]])


@project_app.command("delete")
def project_delete(
    slug: str = typer.Argument(..., help="Project slug."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: everything in the project goes."),
    json_output: bool = JsonOption,
) -> None:
    """Delete a project with its CA certificates, CRLs, devices, API keys and events (admin key).

    Example: fleetpki platform project delete acme --yes
    """
    if not yes:
        raise typer.BadParameter(
            f"deleting {slug!r} removes its CAs, devices, keys and events: add --yes",
            param_hint="--yes",
        )
    CLIENT.call("DELETE", f"/v1/projects/{slug}")
    _show({"deleted": slug}, json_output, [f"project {slug} deleted"])


@apikey_app.command("list")
def apikey_list(project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """List a project's API keys (id and creation time; keys are not kept).

    Example: fleetpki platform apikey list --project acme --json
    """
    data = CLIENT.call("GET", f"/v1/projects/{project}/apikeys")
    lines = [f"{k['id']}  created {k['createdAt']}" for k in data["list"]]
    _show(data, json_output, lines or ["no API keys"])


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: str = typer.Argument(..., help="Key ID (from apikey list)."),
    project: str = ProjectOption,
    json_output: bool = JsonOption,
) -> None:
    """Revoke an API key (admin key): it stops working at once, its console sessions end.

    Example: fleetpki platform apikey revoke 4f1c... --project acme
    """
    CLIENT.call("DELETE", f"/v1/projects/{project}/apikeys/{key_id}")
    _show({"revoked": key_id}, json_output, [f"API key {key_id} revoked"])


@apikey_app.command("create")
def apikey_create(project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """Create an API key for a project (admin key); the key is shown once.

    Example: fleetpki platform apikey create --project acme > acme.key
    """
    data = CLIENT.call("POST", f"/v1/projects/{project}/apikeys")["data"]
    _show(data, json_output, [data["key"]])


@app.command("upload-ca")
def upload_ca(
    file: Path = typer.Argument(
        ..., help="CA certificate (PEM or DER; a PEM bundle uploads each).", dir_okay=False
    ),
    project: str = ProjectOption,
    cert_type: str | None = typer.Option(
        None, "--type", help="root or intermediate (default: from the certificate)."
    ),
    json_output: bool = JsonOption,
) -> None:
    """Upload CA certificate(s) to a project; --json prints {"list": [...], "total": N}.

    Example: fleetpki platform upload-ca factory.crt.pem --project acme --type intermediate
    """
    body: dict[str, Any] = {"certFile": base64.b64encode(read_file(file)).decode()}
    if cert_type is not None:
        body["certType"] = cert_type
    data = CLIENT.call("POST", f"/v1/projects/{project}/certificates", body)
    items = data["list"] if "list" in data else [data["data"]]
    result = {"list": items, "total": len(items)}
    _show(result, json_output, [f"uploaded {_ca_line(ca)}" for ca in items])


@app.command("upload-crl")
def upload_crl(
    file: Path = typer.Argument(
        ..., help="CRL (PEM or DER) signed by a CA of the project.", dir_okay=False
    ),
    project: str = ProjectOption,
    json_output: bool = JsonOption,
) -> None:
    """Upload a CRL. Example: fleetpki platform upload-crl factory.crl --project acme"""
    body = {"crlFile": base64.b64encode(read_file(file)).decode()}
    data = CLIENT.call("POST", f"/v1/projects/{project}/crls", body)["data"]
    _show(data, json_output, [f"CRL of {data['issuer']} uploaded ({data['revoked']} revoked)"])


@ca_app.command("list")
def ca_list(project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """List a project's CA certificates. Example: fleetpki platform ca list -p acme"""
    data = CLIENT.call("GET", f"/v1/projects/{project}/certificates")
    _show(data, json_output, [_ca_line(ca) for ca in data["list"]] or ["no CA certificates"])


def _set_ca(project: str, ca_id: str, enabled: bool, json_output: bool) -> None:
    body = {"enabled": enabled}
    data = CLIENT.call("PATCH", f"/v1/projects/{project}/certificates/{ca_id}", body)["data"]
    _show(data, json_output, [_ca_line(data)])


@ca_app.command("enable")
def ca_enable(ca_id: str, project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """Enable a CA certificate. Example: fleetpki platform ca enable ID -p acme"""
    _set_ca(project, ca_id, True, json_output)


@ca_app.command("disable")
def ca_disable(ca_id: str, project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """Disable a CA certificate: its devices are refused from the next handshake on.

    Example: fleetpki platform ca disable ID -p acme
    """
    _set_ca(project, ca_id, False, json_output)


@ca_app.command("delete")
def ca_delete(ca_id: str, project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """Delete a CA certificate. Example: fleetpki platform ca delete ID -p acme"""
    CLIENT.call("DELETE", f"/v1/projects/{project}/certificates/{ca_id}")
    _show({"deleted": ca_id}, json_output, [f"CA certificate {ca_id} deleted"])


def _device_line(d: dict[str, Any]) -> str:
    state = "enabled " if d["enabled"] else "disabled"
    ids = f"certificateId={d['certificateId']}  lastSeen={d['lastSeen']}"
    return f"{d['id']}  {state}  {d['name']}  {ids}"


@device_app.command("list")
def device_list(
    project: str = ProjectOption,
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    offset: int = typer.Option(0, "--offset", min=0),
    json_output: bool = JsonOption,
) -> None:
    """List devices. Example: fleetpki platform device list -p acme --json"""
    data = CLIENT.call(
        "GET", f"/v1/projects/{project}/devices", params={"limit": limit, "offset": offset}
    )
    lines = [_device_line(d) for d in data["list"]] + [f"{data['total']} devices"]
    _show(data, json_output, lines)


@device_app.command("show")
def device_show(
    device_id: str, project: str = ProjectOption, json_output: bool = JsonOption
) -> None:
    """Show one device. Example: fleetpki platform device show ID -p acme"""
    data = CLIENT.call("GET", f"/v1/projects/{project}/devices/{device_id}")["data"]
    _show(data, json_output, [_device_line(data)])


@device_app.command("create")
def device_create(name: str, project: str = ProjectOption, json_output: bool = JsonOption) -> None:
    """Pre-create a device by name: the first certificate with CN=<name> claims it.

    Example: fleetpki platform device create pump-7 -p acme
    """
    data = CLIENT.call("POST", f"/v1/projects/{project}/devices", {"name": name})["data"]
    _show(data, json_output, [_device_line(data)])


def _patch_device(project: str, device_id: str, body: dict[str, Any], json_output: bool) -> None:
    data = CLIENT.call("PATCH", f"/v1/projects/{project}/devices/{device_id}", body)["data"]
    _show(data, json_output, [_device_line(data)])


@device_app.command("rename")
def device_rename(
    device_id: str, name: str, project: str = ProjectOption, json_output: bool = JsonOption
) -> None:
    """Rename a device (its certificate ID never changes).

    Example: fleetpki platform device rename ID kitchen -p acme
    """
    _patch_device(project, device_id, {"name": name}, json_output)


@device_app.command("enable")
def device_enable(
    device_id: str, project: str = ProjectOption, json_output: bool = JsonOption
) -> None:
    """Enable a device. Example: fleetpki platform device enable ID -p acme"""
    _patch_device(project, device_id, {"enabled": True}, json_output)


@device_app.command("disable")
def device_disable(
    device_id: str, project: str = ProjectOption, json_output: bool = JsonOption
) -> None:
    """Disable a device: refused from its next connection. Example: ... device disable ID -p acme"""
    _patch_device(project, device_id, {"enabled": False}, json_output)


@device_app.command("delete")
def device_delete(
    device_id: str, project: str = ProjectOption, json_output: bool = JsonOption
) -> None:
    """Delete a device. Example: fleetpki platform device delete ID -p acme"""
    CLIENT.call("DELETE", f"/v1/projects/{project}/devices/{device_id}")
    _show({"deleted": device_id}, json_output, [f"device {device_id} deleted"])


@app.command("events")
def events(
    project: str = ProjectOption,
    outcome: str | None = typer.Option(None, "--outcome", help="accepted or refused."),
    certificate_id: str | None = typer.Option(None, "--certificate-id"),
    device_id: str | None = typer.Option(None, "--device-id"),
    transport: str | None = typer.Option(None, "--transport", help="https or coaps."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    json_output: bool = JsonOption,
) -> None:
    """Auth events, newest first. Example: fleetpki platform events -p acme --outcome refused"""
    params = {
        k: v
        for k, v in {
            "outcome": outcome,
            "certificateId": certificate_id,
            "deviceId": device_id,
            "transport": transport,
            "limit": limit,
        }.items()
        if v is not None
    }
    data = CLIENT.call("GET", f"/v1/projects/{project}/auth-events", params=params)
    lines = [
        f"{e['time']}  {e['outcome']:<8} {e['transport']:<6} {e['certificateId']}  "
        f"serial={e['serial']}  {e['reason']}"
        for e in data["list"]
    ]
    _show(data, json_output, lines or ["no events"])
