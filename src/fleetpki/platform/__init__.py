"""The platform (`fleetpki serve`): projects, CA upload, device authentication, device API.

Transports (transports/https.py, transports/coaps.py) know nothing of projects or devices: they
hand a PresentedChain to the Authenticator and carry requests to DeviceResources
(see fleetpki.platform.identity).
"""
