# -*- test-case-name: tests.test_web -*-
"""The web front-end: the page and its WebSocket, served by twisted.web.

A C{twisted.web} Site serves the page's files (plain HTML, CSS and JavaScript
modules, in the package: C{chatservice/web/}) and, at C{/ws}, a WebSocket
(autobahn) that speaks JSON (L{chatservice.frontends.webwire}).  Each
WebSocket is one L{IParticipant} with a L{Session}, under the same limits as
every transport: the flood bucket (input is paused by not reading the
socket), the bounded send queue (a browser that stops reading is dropped as
too slow), the per-address and total caps, the login timeout, and the
longest text (C{--max-line}; autobahn's frame and message limits are set
too).  A handshake from another site's page is refused (C{--web-origins}),
and the client's address is taken from C{X-Forwarded-For} only behind a
trusted proxy (C{--trust-proxy}).
"""

import os

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server, static
from zope.interface import implementer

from chatservice.core.commands import Join, Nick
from chatservice.core.errors import BadUsage, ChatError
from chatservice.core.events import Notice, Refusal, Registered
from chatservice.core.interfaces import IParticipant
from chatservice.core.limits import Limits
from chatservice.core.session import Session
from chatservice.frontends import webwire
from chatservice.frontends.stream import CLOSE_GRACE, DropsSlowReaders, SendQueue

#: The page's files, installed with the package.
PAGE_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
#: Seconds between WebSocket pings to a quiet browser, and to wait for its pong.
PING_INTERVAL = 30.0
PING_TIMEOUT = 30.0
#: The largest WebSocket frame or message accepted, as a multiple of --max-line (JSON
#: escapes a character in at most 6 bytes) plus room for the other fields; past it
#: autobahn closes the connection (1009), under it a long text gets a refusal.
FRAME_FACTOR, FRAME_SLACK = 6, 1024
#: The kind of refusal for a message that is not understood (not JSON, unknown type).
_BAD_MESSAGE = "bad-message"


def frame_limit(limits: Limits) -> int:
    """The largest frame (and message) autobahn takes, for C{limits.max_line}."""
    return limits.max_line * FRAME_FACTOR + FRAME_SLACK


@implementer(IParticipant)
class WebChatProtocol(DropsSlowReaders, WebSocketServerProtocol):
    """One browser (or any WebSocket client) in the chat."""

    via = "web"
    #: A page shows a user's own lines as the server numbered them, so it can resume.
    echo = True
    nick = None
    room = None
    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.peer = "?"
        self._host = None  # the admitted address, released on close
        self._session = None
        self._queue = None
        self._paused = False
        self._held: list = []  # commands read while input is paused, in order
        self._rooms_after_login = None
        self._closed: list[defer.Deferred] = []
        self._gone = False
        self._abort_call = None
        self._drop_call = None

    # -- the handshake ---------------------------------------------------------

    def onConnect(self, request):
        """Check the origin, find the client's address, admit it (or refuse the handshake)."""
        factory = self.factory
        if not factory.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
            self.log.warn("Refused a WebSocket from {peer}: origin {origin}", peer=request.peer,
                          origin=request.headers.get("origin"))
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        host = self.transport.getPeer().host
        forwarded = request.headers.get("x-forwarded-for")
        if factory.trust_proxy and forwarded:
            host = forwarded.split(",")[-1].strip() or host
        try:
            factory.admission.admit(host)
        except ChatError as refusal:
            self.log.warn("Refused a connection from {host}: {why}", host=host,
                          why=str(refusal))
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, str(refusal))
        self._host = host
        port = getattr(self.transport.getPeer(), "port", "?")
        self.peer = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        return None

    def onOpen(self) -> None:
        transport = self.transport
        if getattr(transport, "setTcpNoDelay", None) is not None:
            transport.setTcpNoDelay(True)
        if transport.producer is not None:  # twisted.web's channel, before the takeover
            transport.unregisterProducer()
        self._queue = SendQueue(transport, self.factory.limits.max_backlog, self._too_slow,
                                self.factory.hub.stats.queued_bytes, self.via)
        transport.registerProducer(self._queue, True)
        self._session = self.factory.make_session(self)
        self._session.start(greet=False)

    # -- input -----------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._session is None or self._gone:
            return
        try:
            if isBinary:
                raise BadUsage("send text messages (JSON), not binary ones")
            command = webwire.parse(payload, self.factory.limits.max_line)
        except ChatError as refusal:
            kind = refusal.kind if refusal.kind == "too-long" else _BAD_MESSAGE
            self._tell(Refusal(kind, str(refusal), refusal.subject))
            return
        if self._paused or self._held:
            self._held.append(command)
        else:
            self._apply(command)

    def _apply(self, command) -> None:
        if isinstance(command, webwire.Hello):
            if self._session.joined:
                self._tell(Refusal(_BAD_MESSAGE, "you are logged in already", "hello"))
                return
            self._rooms_after_login = command.rooms
            command = Nick(command.nick)
        self._session.handle(command)

    def pause_input(self) -> None:
        """Stop reading the socket; messages of the read under way wait here, in order."""
        if not self._paused:
            self._paused = True
            if not self._gone:
                self.transport.pauseProducing()

    def resume_input(self) -> None:
        """Hand over what waited, then read the socket again (unless paused again)."""
        if not self._paused:
            return
        self._paused = False
        while self._held and not self._paused and not self._gone:
            self._apply(self._held.pop(0))
        if not self._paused and not self._gone:
            self.transport.resumeProducing()

    # -- output ----------------------------------------------------------------

    def _tell(self, event) -> None:
        """An answer to this user alone, in order with everything else it sees."""
        self.factory.hub.tell(self, event)

    def deliver(self, batch) -> None:
        """
        Send the events of one turn, each one message, in one write: a shared run is
        framed once for everyone who sees it (L{_framed}) and each part is a slice of it.
        """
        if self._gone or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        chunks = []
        for shared, start, stop in batch.parts:
            data, offsets, registered = _framed(shared, self.factory.frame)
            chunks.append(data if start == 0 and stop == len(offsets) - 1
                          else data[offsets[start]:offsets[stop]])
            if registered and any(type(shared.events[i]) is Registered
                                  for i in range(start, stop)):
                self.factory.clock.callLater(0, self._join_rooms)
        self._queue.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _join_rooms(self) -> None:
        """Logged in: join the rooms the hello named (each since its last id), or the default."""
        rooms = self._rooms_after_login
        self._rooms_after_login = None
        if self._gone or self._session is None or not self._session.joined:
            return
        if rooms is None:
            rooms = {self.factory.hub.default_room.name: None}
        for name, since in rooms.items():
            self._session.handle(Join(name, since))

    def close(self, reason: str) -> defer.Deferred:
        """Say C{reason} (a notice), close the WebSocket; fires once the connection is gone."""
        if self._gone:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closed.append(d)
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self._queue.write(self.factory.frame(Notice(reason)))
            self._queue.flush()
            self.sendClose(1000, reason[:120])  # autobahn sends 1000 or an application code
        elif not self.transport.disconnecting:
            self.transport.loseConnection()
        if self._abort_call is None:
            # A peer that never answers the close would keep the connection for ever.
            self._abort_call = self.factory.clock.callLater(
                CLOSE_GRACE, self.transport.abortConnection)
        return d

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._gone = True
        self._held.clear()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._session is not None:
            if self._drop_call is not None:
                self._drop_call.cancel()
                self._drop()
            self._session.connection_lost()
        if self._host is not None:
            self.factory.admission.release(self._host)
            self._host = None
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)


def _framed(shared, frame) -> tuple:
    """
    A shared run as WebSocket frames, built once per run: (the frames joined, where
    each event's frame starts, whether a L{Registered} is among them).
    """
    cached = shared.encoded.get("web")
    if cached is None:
        frames = [frame(event) for event in shared.events]
        offsets = [0]
        for one in frames:
            offsets.append(offsets[-1] + len(one))
        registered = any(type(event) is Registered for event in shared.events)
        cached = shared.encoded["web"] = (b"".join(frames), offsets, registered)
    return cached


class WebChatFactory(WebSocketServerFactory):
    """
    Builds one L{WebChatProtocol} per WebSocket.

    @param origins: the page origins allowed to open a WebSocket (C{scheme://host[:port]});
        empty: the page's own origin only (its C{Host}, with C{https} when C{secure}).
        C{"*"} allows any.
    @param trust_proxy: take the client's address from C{X-Forwarded-For}'s last entry.
    """

    protocol = WebChatProtocol
    log = Logger()

    def __init__(self, hub, registry, clock, admission, limits: Limits = Limits(),
                 origins: tuple = (), trust_proxy: bool = False, secure: bool = False) -> None:
        super().__init__(reactor=clock)
        self.hub = hub
        self.registry = registry
        self.clock = clock
        self.admission = admission
        self.limits = limits
        self.origins = tuple(origin.rstrip("/").lower() for origin in origins)
        self.trust_proxy = trust_proxy
        self.secure = secure
        limit = frame_limit(limits)
        self.setProtocolOptions(
            maxFramePayloadSize=limit, maxMessagePayloadSize=limit,
            autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT,
            openHandshakeTimeout=max(limits.login_timeout, 10.0) if limits.login_timeout else 30.0,
            closeHandshakeTimeout=CLOSE_GRACE,
            # A frame past the limit gets a close frame saying so (1009), not a bare drop.
            failByDrop=False,
            perMessageCompressionAccept=lambda offers: None,
        )

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with this C{Origin} (and C{Host}) header may go on."""
        if "*" in self.origins:
            return True
        if origin is None:
            return True  # not a browser: no page of another site is asking
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        own = f"{'https' if self.secure else 'http'}://{(host or '').lower()}"
        return not self.origins and origin == own

    def frame(self, event) -> bytes:
        """C{event} as one WebSocket frame, ready for the wire (server frames are not masked)."""
        return self.prepareMessage(webwire.encode(event)).payloadHybi

    def make_session(self, participant) -> Session:
        """The chat rules for one new WebSocket (tests give a fake here)."""
        return Session(participant, self.hub, self.registry, self.clock, self.limits,
                       lands_in_default_room=False)


class _NoListing(static.File):
    """The page's folder: its files, never a listing of it."""

    def directoryListing(self):
        return resource.NoResource("No such page.")


def make_site(factory: WebChatFactory, page_folder: str = PAGE_FOLDER,
              more: dict | None = None) -> server.Site:
    """
    The web listener's Site: the page at C{/}, the WebSocket at C{/ws}.

    @param more: other resources by path (C{{b"metrics": ...}}).
    """
    root = _NoListing(page_folder)
    root.indexNames = ["index.html"]
    root.putChild(b"ws", WebSocketResource(factory))
    for path, child in (more or {}).items():
        root.putChild(path, child)
    site = server.Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
