"""The one exception family: every user-facing failure is a FleetPKIError, one line long."""


class FleetPKIError(Exception):
    """A failure the user can act on; ``str(error)`` is one line and never contains a secret."""


class InputError(FleetPKIError):
    """Malformed or unacceptable input: a file, a name, a CSR."""


class PolicyError(FleetPKIError):
    """Input that is well-formed but breaks the signing policy."""


class PassphraseError(FleetPKIError):
    """A missing or wrong passphrase for an encrypted key."""


class NotFoundError(FleetPKIError):
    """A named thing (CA, certificate) does not exist."""


class ConflictError(FleetPKIError):
    """The operation would clash with existing state (a file, an active certificate)."""


class VerificationError(FleetPKIError):
    """A certificate chain or signature does not verify; the message says why."""
