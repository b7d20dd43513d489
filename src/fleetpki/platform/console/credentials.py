"""Credentials → Certificates: the project's CA certificates, Add CA Certificate, CRLs."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleetpki.errors import ConflictError, InputError
from fleetpki.formats import describe_certificate
from fleetpki.platform.console.web import (
    Confirmation,
    Console,
    Visitor,
    file_field,
    text_field,
)
from fleetpki.platform.store.cas import CERT_TYPES

SECTION = "certificates"
_PEM, _DER = Encoding.PEM, Encoding.DER


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    """(short name, value) of each attribute, values as they are (the page escapes them)."""
    shown = []
    for attribute in name:
        value = attribute.value
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        shown.append((attribute.rfc4514_attribute_name, text))
    return shown


def router(console: Console) -> APIRouter:
    routes = APIRouter()
    store = console.store

    def list_page(
        request: Request,
        visitor: Visitor,
        project_id: str,
        *,
        crl_error: str | None = None,
        status: int = 200,
    ) -> Response:
        project = console.project(visitor, project_id)
        return console.render(
            request, "certificates.html", visitor=visitor, status=status, project=project,
            section=SECTION, cas=store.list_cas(project_id), crls=store.list_crls(project_id),
            crl_error=crl_error,
        )  # fmt: skip

    @routes.get("/p/{project}/certificates", name="certificates")
    def certificates(request: Request, project: str) -> Response:
        return list_page(request, console.require_visitor(request), project)

    def add_page(
        request: Request,
        visitor: Visitor,
        project_id: str,
        errors: dict[str, str],
        cert_type: str = "root",
        status: int = 200,
    ) -> Response:
        project = console.project(visitor, project_id)
        return console.render(
            request, "add_ca.html", visitor=visitor, status=status, project=project,
            section=SECTION, errors=errors, cert_type=cert_type, cert_types=CERT_TYPES,
        )  # fmt: skip

    @routes.get("/p/{project}/certificates/add", name="add_ca")
    def add_ca(request: Request, project: str) -> Response:
        return add_page(request, console.require_visitor(request), project, {})

    @routes.post("/p/{project}/certificates/add", name="add_ca_post")
    async def add_ca_post(request: Request, project: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        data = await file_field(form, "certFile")
        cert_type = text_field(form, "certType", 20)
        errors: dict[str, str] = {}
        if cert_type not in CERT_TYPES:
            errors["certType"] = "Choose Root or Intermediate."
        if data is None:
            errors["certFile"] = "Choose a certificate file (PEM or DER)."
        if not errors and data is not None:
            try:
                await run_in_threadpool(store.upload_ca, project, data, cert_type)
            except (InputError, ConflictError) as exc:
                # The store's message never quotes the upload (a private key stays unechoed).
                errors["certFile"] = str(exc)
            else:
                return console.redirect(request, "certificates", done="uploaded", project=project)
        return await run_in_threadpool(
            add_page, request, visitor, project, errors, cert_type or "root", 400
        )

    @routes.get("/p/{project}/certificates/{ca_id}", name="certificate")
    def certificate(request: Request, project: str, ca_id: str) -> Response:
        visitor = console.require_visitor(request)
        found = console.project(visitor, project)
        ca = store.get_ca(project, ca_id)
        if ca["problem"]:  # stored by an older version, unreadable now: it can only be deleted
            return console.render(
                request, "certificate.html", visitor=visitor, project=found, section=SECTION,
                ca=ca, decoded=None, pem=None, names={},
            )  # fmt: skip
        cert = store.get_ca_certificate(project, ca_id)
        decoded: dict[str, Any] = describe_certificate(cert)
        return console.render(
            request, "certificate.html", visitor=visitor, project=found, section=SECTION, ca=ca,
            decoded=decoded, pem=cert.public_bytes(_PEM).decode(),
            names={"Subject": _attributes(cert.subject), "Issuer": _attributes(cert.issuer)},
        )  # fmt: skip

    @routes.get("/p/{project}/certificates/{ca_id}/download", name="certificate_download")
    def certificate_download(request: Request, project: str, ca_id: str) -> Response:
        visitor = console.require_visitor(request)
        console.project(visitor, project)
        cert = store.get_ca_certificate(project, ca_id)
        der = request.query_params.get("format") == "der"
        body = cert.public_bytes(_DER if der else _PEM)
        name = f"{project}-{ca_id[:8]}.crt.{'der' if der else 'pem'}"
        return Response(
            body,
            media_type="application/pkix-cert" if der else "application/x-pem-file",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @routes.post("/p/{project}/certificates/{ca_id}/enabled", name="certificate_enabled")
    async def certificate_enabled(request: Request, project: str, ca_id: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        enabled = text_field(form, "enabled", 5) == "true"
        await run_in_threadpool(store.set_ca_enabled, project, ca_id, enabled)
        done = "enabled" if enabled else "disabled"
        if text_field(form, "back", 10) == "detail":
            return console.redirect(request, "certificate", done=done, project=project, ca_id=ca_id)
        return console.redirect(request, "certificates", done=done, project=project)

    @routes.get("/p/{project}/certificates/{ca_id}/delete", name="certificate_delete")
    def certificate_delete(request: Request, project: str, ca_id: str) -> Response:
        visitor = console.require_visitor(request)
        found = console.project(visitor, project)
        ca = store.get_ca(project, ca_id)
        content = ca["certificateContent"]
        subject = content["subject"] if content else f"{ca_id[:8]} (unreadable)"
        asked = Confirmation(
            "Delete CA certificate",
            f"Delete the {ca['certType']} CA certificate {subject}? Devices whose certificates "
            "chain only to it are refused from their next connection. This cannot be undone "
            "(you can upload the certificate again).",
            "Delete CA certificate",
            "certificate_delete_post",
            "certificate",
            {"project": project, "ca_id": ca_id},
        )
        return console.confirm(request, visitor, found, SECTION, asked)

    @routes.post("/p/{project}/certificates/{ca_id}/delete", name="certificate_delete_post")
    async def certificate_delete_post(request: Request, project: str, ca_id: str) -> Response:
        visitor, _ = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        await run_in_threadpool(store.delete_ca, project, ca_id)
        return console.redirect(request, "certificates", done="deleted", project=project)

    @routes.post("/p/{project}/crls", name="crl_upload")
    async def crl_upload(request: Request, project: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        data = await file_field(form, "crlFile")
        error = "Choose a CRL file (PEM or DER)." if data is None else None
        if data is not None:
            try:
                await run_in_threadpool(store.upload_crl, project, data)
            except (InputError, ConflictError) as exc:
                error = str(exc)
            else:
                return console.redirect(
                    request, "certificates", done="crl-uploaded", project=project
                )
        return await run_in_threadpool(
            lambda: list_page(request, visitor, project, crl_error=error, status=400)
        )

    return routes
