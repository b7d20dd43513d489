"""fleetpki: an offline PKI for IoT device fleets, and the platform devices authenticate against."""

from fleetpki.errors import FleetPKIError

__all__ = ["FleetPKIError", "__version__"]
__version__ = "0.1.0"
