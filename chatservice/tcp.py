# -*- test-case-name: tests.test_tcp -*-
"""The TCP line protocol for telnet, nc and the bundled client.

A connection is one L{IParticipant}: bytes become lines for its session, and
the room's events become CRLF-terminated UTF-8 lines.  No chat logic here.
"""

import re

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from chatservice.errors import ChatError
from chatservice.events import Notice, Refusal
from chatservice.interfaces import IParticipant
from chatservice.limits import Limits
from chatservice.render import RenderCache, as_bytes
from chatservice.session import Session

#: Seconds a closing connection may take to flush its goodbye before it is cut.
CLOSE_GRACE = 10.0

# IAC IAC (a literal 0xFF), IAC SB ... IAC SE, IAC WILL/WONT/DO/DONT opt, IAC cmd.
_TELNET_COMMAND = re.compile(rb"\xff(?:\xfa.*?(?:\xff\xf0|\Z)|[\xfb-\xfe].?|.?)", re.DOTALL)


def strip_telnet(line: bytes) -> bytes:
    """Remove telnet IAC negotiation from C{line}; it is never relayed."""
    return _TELNET_COMMAND.sub(b"", line)


@implementer(IPushProducer)
class SendQueue:
    """
    A user's unsent output, bounded.

    The transport pauses us when its own buffer is full (Twisted's
    producer/consumer machinery); from then on output waits here, and once it
    passes C{limit} bytes the user is too slow to read and C{overflow} is called.
    Fast readers never wait on this.
    """

    def __init__(self, transport, limit: int, overflow) -> None:
        self._transport = transport
        self._limit = limit
        self._overflow = overflow
        self._chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self._overflowed = False

    @property
    def size(self) -> int:
        """Bytes waiting here (not counting the transport's own buffer)."""
        return self._size

    def write(self, data: bytes) -> None:
        """Send C{data} now, or queue it while the transport is full."""
        if not self._paused and not self._chunks:
            self._transport.write(data)
            return
        if self._overflowed:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._limit and self._size > self._limit:
            self._overflowed = True
            self._chunks, self._size = [], 0
            self._overflow()

    def flush(self) -> None:
        """Hand everything queued to the transport, paused or not (for closing)."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._size = [], 0
            self._transport.write(data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.flush()

    def stopProducing(self) -> None:
        self._chunks, self._size = [], 0


@implementer(IParticipant)
class LineChatProtocol(LineReceiver):
    """A telnet or nc user: one UTF-8 line in, one call to the session."""

    delimiter = b"\n"  # nc sends LF, telnet CRLF: split on LF, strip CR ourselves
    via = "tcp"
    nick = None
    log = Logger()

    def __init__(self, factory: "LineChatFactory", host: str) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.limits.max_line
        self._host = host
        self._discarding = False
        self._rest: bytes | None = None
        self._closed: list[defer.Deferred] = []
        self._gone = False
        self._abort_call = None

    def connectionMade(self) -> None:
        # Chat lines are small and must go out at once: without TCP_NODELAY, Nagle's
        # algorithm holds a line back until the previous one is acknowledged, and the
        # reader's delayed ACK makes that 40 ms (the benchmark's p99 showed exactly that).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._queue = SendQueue(
            self.transport, self.factory.limits.max_backlog, self._too_slow
        )
        self.transport.registerProducer(self._queue, True)
        self._session = Session(
            self, self.factory.room, self.factory.registry, self.factory.clock,
            self.factory.limits,
        )
        self._session.start()

    # -- input --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Split lines as LineReceiver does, but survive an over-long line."""
        while data:
            if self._discarding:
                newline = data.find(b"\n")
                if newline < 0:
                    return
                self._discarding = False
                data = data[newline + 1 :]
                continue
            LineReceiver.dataReceived(self, data)
            data, self._rest = self._rest, None

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse the long line, discard it up to its newline, keep the connection."""
        self._refuse(f"line too long (max {self.MAX_LENGTH} bytes)")
        newline = line.find(b"\n")
        if newline < 0:
            self._discarding = True
        else:
            self._rest = line[newline + 1 :]

    def lineReceived(self, line: bytes) -> None:
        if b"\xff" in line:
            line = strip_telnet(line)
        self._session.handle(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    # -- output -------------------------------------------------------------

    def deliver(self, events) -> None:
        """Write the events as lines; the same batch is encoded once for everyone."""
        if not self._gone and not self.transport.disconnecting:
            self._queue.write(self.factory.encode(events))

    def _refuse(self, text: str) -> None:
        self.factory.room.tell(self, Refusal(text))

    def close(self, reason: str) -> defer.Deferred:
        """Say C{reason}, flush, hang up; fires once the connection is gone."""
        if self._gone:
            return defer.succeed(None)
        self._session.end(reason)  # nothing more from this user once we say goodbye
        d = defer.Deferred()
        self._closed.append(d)
        if not self.transport.disconnecting:
            self._queue.write(as_bytes(Notice(reason)))
            self._queue.flush()
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            # A peer that never reads would keep the connection half-closed forever.
            self._abort_call = self.factory.clock.callLater(
                CLOSE_GRACE, self.transport.abortConnection
            )
        return d

    def _too_slow(self) -> None:
        self.log.warn("{nick} is too slow to read; dropping", nick=self.nick)
        self._session.end("too slow to read")
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self._gone = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        self._session.connection_lost()
        self.factory.admission.release(self._host)
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)


class _Refuse(Protocol):
    """Says why a connection is refused, then hangs up."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def connectionMade(self) -> None:
        self.transport.write(as_bytes(Refusal(self._reason)))
        self.transport.loseConnection()


class LineChatFactory(Factory):
    """Builds one L{LineChatProtocol} per connection, admitted within the limits."""

    log = Logger()

    def __init__(self, room, registry, clock, admission, limits: Limits = Limits()):
        self.room = room
        self.registry = registry
        self.clock = clock
        self.admission = admission
        self.limits = limits
        self._render = RenderCache()
        self._encoded_for = None
        self._encoded = b""

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        try:
            self.admission.admit(host)
        except ChatError as refusal:
            self.log.warn("Refused a connection from {host}: {why}", host=host, why=str(refusal))
            return _Refuse(str(refusal))
        return LineChatProtocol(self, host)

    def encode(self, events) -> bytes:
        """Encode a batch of events; the room hands many users the same batch."""
        if events is not self._encoded_for:
            render = self._render
            self._encoded = b"".join([render(event) for event in events])
            self._encoded_for = events
        return self._encoded
