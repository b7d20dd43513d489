"""The management API (FastAPI): projects, API keys, CA certificates, CRLs, devices, events."""

from fleetpki.platform.api.app import create_app

__all__ = ["create_app"]
