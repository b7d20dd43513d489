"""RFC 5280 lint through pkilint (in process), for certificates and CRLs."""

from __future__ import annotations

from dataclasses import dataclass

from fleetpki.errors import FleetPKIError, InputError

SEVERITIES = ("FATAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    code: str
    message: str | None
    node: str


def lint_certificate(der: bytes, min_severity: str = "WARNING") -> list[Finding]:
    """pkilint's RFC 5280 certificate linter; findings at ``min_severity`` or worse.

    Raises FleetPKIError if pkilint is not installed, InputError if it cannot decode ``der``.
    """
    try:
        from pkilint import loader
        from pkilint.pkix import certificate, extension, name
        from pkilint.validation import ValidationFindingSeverity
    except ImportError:
        raise FleetPKIError("pkilint is not installed (pip install pkilint)") from None
    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    try:
        document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "input")
    except Exception as exc:  # pkilint raises assorted pyasn1 errors on garbage
        raise InputError(f"pkilint cannot decode the certificate ({exc})") from None
    threshold = ValidationFindingSeverity[min_severity]
    findings = []
    for result in validator.validate(document.root):
        for description in result.finding_descriptions:
            if description.finding.severity <= threshold:
                findings.append(
                    Finding(
                        description.finding.severity.name,
                        description.finding.code,
                        description.message,
                        result.node.path,
                    )
                )
    return findings
