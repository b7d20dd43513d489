"""CoAP over DTLS 1.2: the device endpoint on UDP (default port 5684).

The DTLS layer (dtls.py) proves the peer holds the key of the leaf it presented; this module asks
the platform's Authenticator about that chain, then carries CoAP requests with aiocoap's own
message layer (message codec, confirmable/non-confirmable exchange, duplicate detection and
block-wise transfer), served by the same DeviceResources as the HTTPS endpoint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap import error as coap_error
from aiocoap import interfaces, resource
from aiocoap.blockwise import Block1Spool
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers import ContentFormat
from aiocoap.tokenmanager import TokenManager

from fleetpki.platform.identity import (
    Authenticator,
    DeviceIdentity,
    DeviceResources,
    PresentedChain,
)
from fleetpki.platform.transports.dtls import (
    DtlsEndpoint,
    DtlsSession,
    DtlsSettings,
    server_context,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 5684
TRANSPORT = "coaps"
DEVICE_PATHS = ("whoami", "state")
MAX_BODY = 64 * 1024  # the HTTPS endpoint's bound too

_CODES = {
    200: aiocoap.CONTENT,
    201: aiocoap.CREATED,
    204: aiocoap.CHANGED,
    400: aiocoap.BAD_REQUEST,
    401: aiocoap.UNAUTHORIZED,
    403: aiocoap.FORBIDDEN,
    404: aiocoap.NOT_FOUND,
    405: aiocoap.METHOD_NOT_ALLOWED,
    413: aiocoap.REQUEST_ENTITY_TOO_LARGE,
    415: aiocoap.UNSUPPORTED_CONTENT_FORMAT,
    500: aiocoap.INTERNAL_SERVER_ERROR,
}
_FORMATS = {
    "application/json": ContentFormat.JSON,
    "text/plain": ContentFormat.TEXT,
    "text/plain; charset=utf-8": ContentFormat.TEXT,
    "application/octet-stream": ContentFormat.OCTETSTREAM,
}


def coap_code(status: int) -> aiocoap.numbers.codes.Code:
    """The CoAP response code for an HTTP-style DeviceResponse status."""
    if status in _CODES:
        return _CODES[status]
    if 200 <= status < 300:
        return aiocoap.CONTENT
    return aiocoap.BAD_REQUEST if 400 <= status < 500 else aiocoap.INTERNAL_SERVER_ERROR


class DeviceRemote(interfaces.EndpointAddress):  # type: ignore[misc]
    """One authenticated DTLS session, as aiocoap sees a peer.

    Equality is identity: a new handshake from the same address is a new remote, so duplicate
    detection and block-wise state never cross sessions (RFC 7252 9.1.2).
    """

    scheme = "coaps"
    is_multicast = False
    is_multicast_locally = False
    # 1024-byte blocks keep a block-wise message inside one DTLS record of our 1200-byte MTU.
    maximum_block_size_exp = 6

    def __init__(self, session: DtlsSession, identity: DeviceIdentity, local: str) -> None:
        self.session = session
        self.identity = identity
        self._local = local

    @property
    def hostinfo(self) -> str:
        return self.session.peer_text

    @property
    def hostinfo_local(self) -> str:
        return self._local

    @property
    def uri_base(self) -> str:
        return "coaps://" + self.hostinfo

    @property
    def uri_base_local(self) -> str:
        return "coaps://" + self._local

    @property
    def authenticated_claims(self) -> tuple[DeviceIdentity]:
        return (self.identity,)

    @property
    def blockwise_key(self) -> tuple[Any, int]:
        return (self.session.peer, id(self))

    def __repr__(self) -> str:
        return f"<DeviceRemote {self.hostinfo} device {self.identity.device_id}>"


class DtlsMessageInterface(interfaces.MessageInterface):  # type: ignore[misc]
    """aiocoap's MessageInterface over the DTLS session table (server side only)."""

    def __init__(self, mman: MessageManager) -> None:
        self._mman: MessageManager | None = mman

    def received(self, remote: DeviceRemote, datagram: bytes) -> None:
        if self._mman is None:
            return
        try:
            message = aiocoap.Message.decode(datagram, remote=remote)
        except coap_error.UnparsableMessage:
            log.debug("unparsable CoAP message from %s", remote.hostinfo)
            return
        self._mman.dispatch_message(message)

    def send(self, message: aiocoap.Message) -> None:
        message.remote.session.send(message.encode())

    async def determine_remote(self, message: aiocoap.Message) -> None:
        return None  # the endpoint answers devices; it never starts requests

    async def shutdown(self) -> None:
        self._mman = None


class _BoundedBlock1Spool(Block1Spool):  # type: ignore[misc]
    """aiocoap's Block1 reassembly, refusing (4.13) a body beyond MAX_BODY before storing it."""

    def feed_and_take(self, request: aiocoap.Message) -> aiocoap.Message:
        block1 = request.opt.block1
        if block1 is not None and (block1.block_number + 1) * block1.size > MAX_BODY:
            raise coap_error.RequestEntityTooLarge(f"request body is limited to {MAX_BODY} bytes")
        return super().feed_and_take(request)


class DeviceResource(resource.Resource):  # type: ignore[misc]
    """``whoami`` or ``state``: every method goes to DeviceResources, which decides (405 etc.)."""

    ct = int(ContentFormat.JSON)  # .well-known/core shows the number (ct=50), not a name

    def __init__(self, path: str, resources: DeviceResources, executor: ThreadPoolExecutor):
        super().__init__()
        # Block-wise PUTs are reassembled in memory: an authenticated device must not be able
        # to make that unbounded.
        self._block1 = _BoundedBlock1Spool()
        self.path = path
        self.resources = resources
        self.executor = executor

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        identity = request.remote.authenticated_claims[0]
        method = str(request.code.name)
        handle = functools.partial(
            self.resources.handle, identity, method, self.path, bytes(request.payload)
        )
        answer = await asyncio.get_running_loop().run_in_executor(self.executor, handle)
        content_format = _FORMATS.get(answer.content_type) if answer.body else None
        return aiocoap.Message(
            code=coap_code(answer.status), payload=answer.body, content_format=content_format
        )


def build_site(resources: DeviceResources, executor: ThreadPoolExecutor) -> resource.Site:
    """The device resource tree: ``.well-known/core``, ``whoami`` and ``state``."""
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"],
        resource.WKCResource(site.get_resources_as_linkheader, impl_info=None),
    )
    for path in DEVICE_PATHS:
        site.add_resource([path], DeviceResource(path, resources, executor))
    return site


class CoapsServer:
    """The endpoint: DTLS sessions, the auth pipeline once per handshake, CoAP on top."""

    def __init__(
        self,
        authenticator: Authenticator,
        resources: DeviceResources,
        *,
        certfile: Path,
        keyfile: Path,
        settings: DtlsSettings | None = None,
        workers: int = 4,
    ) -> None:
        self.authenticator = authenticator
        self.resources = resources
        self.ssl_context = server_context(certfile, keyfile)
        self.settings = settings or DtlsSettings()
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="coaps")
        self.endpoint: DtlsEndpoint | None = None
        self.local = ""
        self._interface: DtlsMessageInterface | None = None
        self._context: aiocoap.Context | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Bind and start serving; returns the bound address. Raises OSError.

        ``reuse_port``: several processes may bind the same port; the kernel hashes each peer's
        address to one of them, so a peer's datagrams (cookie exchange included) always reach
        the same process and its session.
        """
        loop = asyncio.get_running_loop()
        self._context = aiocoap.Context(
            loop=loop, serversite=build_site(self.resources, self.executor), loggername=__name__
        )
        # The same wiring aiocoap's own UDP transports get: tokens, then messages, then us.
        tokens = TokenManager(self._context)
        messages = MessageManager(tokens)
        self._interface = DtlsMessageInterface(messages)
        messages.message_interface = self._interface
        tokens.token_interface = messages
        self._context.request_interfaces.append(tokens)
        _transport, endpoint = await loop.create_datagram_endpoint(
            lambda: DtlsEndpoint(self.ssl_context, self._authorize, self._received, self.settings),
            local_addr=(host, port),
            reuse_port=reuse_port or None,
        )
        self.endpoint = endpoint
        bound = endpoint.transport.get_extra_info("sockname") if endpoint.transport else None
        address = (bound[0], bound[1]) if bound else (host, port)
        host_text = f"[{address[0]}]" if ":" in address[0] else address[0]
        self.local = f"{host_text}:{address[1]}"
        return address

    async def _authorize(self, session: DtlsSession) -> DeviceRemote | None:
        leaf, others = session.presented_chain()
        presented = PresentedChain(leaf, others) if leaf is not None else None
        authenticate = functools.partial(
            self.authenticator.authenticate,
            presented,
            transport=TRANSPORT,
            peer=session.peer_text,
        )
        outcome = await asyncio.get_running_loop().run_in_executor(self.executor, authenticate)
        if isinstance(outcome, DeviceIdentity):
            return DeviceRemote(session, outcome, self.local)
        log.info("CoAPS handshake from %s refused: %s", session.peer_text, outcome.reason)
        return None

    def _received(self, session: DtlsSession, plaintext: bytes) -> None:
        if self._interface is not None and isinstance(session.app, DeviceRemote):
            self._interface.received(session.app, plaintext)

    async def serve(self) -> None:
        """Run the idle-session sweeper until cancelled, then shut everything down."""
        assert self.endpoint is not None
        try:
            await self.endpoint.run_sweeper()
        finally:
            await self.close()

    async def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
        self.executor.shutdown(wait=False, cancel_futures=True)


async def serve_coaps(
    authenticator: Authenticator,
    resources: DeviceResources,
    *,
    certfile: Path,
    keyfile: Path,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    reuse_port: bool = False,
    settings: DtlsSettings | None = None,
) -> None:
    """Serve CoAP over DTLS 1.2 on ``host:port`` until cancelled; sets ``ready`` once bound.

    ``reuse_port=True`` lets one such server run in each of several worker processes on the same
    port (see CoapsServer.start). Raises OSError when the address cannot be bound and
    OpenSSL.SSL.Error for an unusable certificate or key.
    """
    server = CoapsServer(
        authenticator, resources, certfile=certfile, keyfile=keyfile, settings=settings
    )
    try:
        await server.start(host, port, reuse_port=reuse_port)
    except BaseException:
        await server.close()
        raise
    if ready is not None:
        ready.set()
    await server.serve()
