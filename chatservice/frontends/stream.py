# -*- test-case-name: tests.test_tcp -*-
"""What every stream front-end shares: framing, input held in order, the send queue.

A connection is one L{IParticipant}.  Input goes through three steps, each
cheap when it has nothing to do:
 1. decoding (a hook: the line protocol answers telnet here);
 2. framing: one C{bytes.split} per read; a line longer than C{MAX_LENGTH}
    is refused and skipped up to its newline, and the partial line held
    between reads never exceeds C{MAX_LENGTH} bytes;
 3. hand-over: each line goes to the protocol's L{StreamChatProtocol._line}
    (and from there to the session), unless the session has paused input
    (L{StreamChatProtocol.pause_input}) or the service's L{InputGate} is
    closed (this turn read all it may); then the lines wait here, in order,
    and the socket is not read until both allow it again.
Output goes through a bounded L{SendQueue}: a reader too slow to keep up is
dropped, never waited for.  The line protocol (C{line.py}) and IRC (C{irc.py})
are built on this; front-ends never import each other.
"""


from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from chatservice.core.errors import ChatError
from chatservice.core.events import Refusal
from chatservice.core.interfaces import IParticipant
from chatservice.core.limits import Limits
from chatservice.core.render import as_bytes
from chatservice.core.session import Session
from chatservice.frontends.backpressure import LINE_COST, InputGate
from chatservice.frontends.directwrite import direct_writer

#: Seconds a closing connection may take to flush its goodbye before it is cut.
CLOSE_GRACE = 10.0

#: Stands in the queue of held input for a line that was too long (its bytes are gone).
_TOO_LONG = object()


@implementer(IPushProducer)
class SendQueue:
    """
    A user's unsent output, bounded.

    The transport pauses us when its own buffer is full (Twisted's
    producer/consumer machinery); from then on output waits here, and once it
    passes C{limit} bytes the user is too slow to read and C{overflow} is called.
    Fast readers never wait on this, and their output goes to the socket at
    once when nothing is queued (L{direct_writer}).

    @param queued: a dict of transport to bytes waiting in every queue (the
        service's L{chatservice.core.stats.Stats}), kept up to date under C{via}.
    """

    def __init__(self, transport, limit: int, overflow, queued: dict | None = None,
                 via: str | None = None) -> None:
        self._write = direct_writer(transport)
        self._limit = limit
        self._overflow = overflow
        self._chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self._overflowed = False
        self._queued = queued if queued is not None else {}
        self._via = via

    @property
    def size(self) -> int:
        """Bytes waiting here (not counting the transport's own buffer)."""
        return self._size

    def write(self, data: bytes) -> None:
        """Send C{data} now, or queue it while the transport is full."""
        if not self._paused and not self._chunks:
            self._write(data)
            return
        if self._overflowed:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._count(len(data))
        if self._limit and self._size > self._limit:
            self._overflowed = True
            self._count(-self._size)
            self._chunks, self._size = [], 0
            self._overflow()

    def _count(self, change: int) -> None:
        queued = self._queued
        queued[self._via] = queued.get(self._via, 0) + change

    def flush(self) -> None:
        """Hand everything queued to the transport, paused or not (for closing)."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._count(-self._size)
            self._chunks, self._size = [], 0
            self._write(data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.flush()

    def stopProducing(self) -> None:
        self._count(-self._size)
        self._chunks, self._size = [], 0


class DropsSlowReaders:
    """
    What a connection does when its send queue overflows (L{SendQueue}'s
    C{overflow}): a mixin for protocols with C{transport}, C{factory.clock},
    C{_session}, C{nick}, C{peer} and a C{_drop_call} of None, which their
    C{connectionLost} runs at once if still pending.
    """

    def _too_slow(self) -> None:
        """
        Output passed the bound: hang up now, and end the session right after.

        Not from here: this runs inside C{deliver}, while the hub hands out a
        turn, and ending the session takes this user out of the rooms being
        walked.  The session ends on the next turn, or as the connection's end
        is reported if that comes first; either way once, as too slow.
        """
        self.log.warn("{nick} ({peer}) is too slow to read; dropping", nick=self.nick,
                      peer=self.peer)
        self._drop_call = self.factory.clock.callLater(0, self._drop)
        self.transport.abortConnection()

    def _drop(self) -> None:
        self._drop_call = None
        self._session.end("too slow to read")


@implementer(IParticipant)
class StreamChatProtocol(DropsSlowReaders, Protocol):
    """
    A chat user on a byte stream: lines in, each to the session; events out.

    Subclasses say what a line means (L{_line}), how events look (L{deliver}),
    how a line too long is refused and how a goodbye is said (L{close}), and
    may decode each read first (L{_decode}: telnet).

    @ivar MAX_LENGTH: the longest line, in bytes without its line end.
    @ivar _buffer: the partial line received so far (at most C{MAX_LENGTH}).
    @ivar _pending: input not yet handed to the session while it is paused,
        in order: blocks of whole lines as the bytes they arrived as (each
        line ending in LF; C{_offset} is where the first block's next line
        starts), and L{_TOO_LONG} where a refused line stood.  Bytes, not one
        object per line: a paused 64 KiB read of short lines costs 64 KiB.
    """

    via = None  # set by each protocol: "tcp", "irc"
    echo = False  # whether the user is shown its own room lines
    nick = None
    room = None
    log = Logger()

    def __init__(self, factory: "StreamChatFactory", host: str, peer: str | None = None) -> None:
        self.factory = factory
        self.peer = host if peer is None else peer
        self.MAX_LENGTH = factory.limits.max_line
        self._host = host
        self._buffer = b""
        # A list, not a deque: an empty deque costs 760 bytes per connection, and this
        # holds a few blocks at most (one per read while paused).
        self._pending: list[bytes | object] = []
        self._offset = 0
        self._discarding = False
        self._paused = False  # by the session (flood control)
        self._gated = False  # held by the input gate (this turn read all it may)
        self._reading = True  # whether the transport reads its socket
        self._handing_over = False
        self._closed: list[defer.Deferred] = []
        self._gone = False
        self._abort_call = None
        self._drop_call = None  # ends the session of a reader too slow, after the turn

    def connectionMade(self) -> None:
        # Chat lines are small and must go out at once: without TCP_NODELAY, Nagle's
        # algorithm holds a line back until the previous one is acknowledged, and the
        # reader's delayed ACK makes that 40 ms (the benchmark's p99 showed exactly that).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._queue = SendQueue(
            self.transport, self.factory.limits.max_backlog, self._too_slow,
            self.factory.hub.stats.queued_bytes, self.via,
        )
        self.transport.registerProducer(self._queue, True)
        self._session = self.make_session()
        self.greet()

    def make_session(self) -> Session:
        """The chat rules for this connection (the factory's, so tests can give a fake)."""
        return self.factory.make_session(self)

    def greet(self) -> None:
        """Start the session: it asks for a nickname."""
        self._session.start()

    # -- input --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Decode (L{_decode}), split lines, hand them over.

        A partial line is kept between reads up to C{MAX_LENGTH} bytes; past
        that it is refused (in its place among the lines) and the rest of it,
        up to its newline, is skipped.
        """
        data = self._decode(data)
        # Framing: one split per read.
        if self._discarding:  # the rest of a line that was too long
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._discarding = False
            data = data[newline + 1 :]
        lines = data.split(b"\n")
        partial = lines.pop()
        if self._buffer:
            if lines:
                lines[0] = self._buffer + lines[0]
            else:
                partial = self._buffer + partial
        too_long = len(partial) > self.MAX_LENGTH
        if too_long:  # refused in its place among the lines; the rest of it is skipped
            partial = b""
            self._discarding = True
        self._buffer = partial
        if not lines and not too_long:
            return
        if self._pending or self._paused or self._handing_over or self._gated:
            self._hold(lines, too_long)
            self._hand_over()
        elif self.factory.gate.closed:
            self._hold(lines, too_long)
            self._wait_for_gate()
        else:
            self._feed(lines, too_long)

    def _decode(self, data: bytes) -> bytes:
        """One read as line data (LF-terminated lines); the line protocol decodes telnet here."""
        return data

    def _feed(self, lines: list[bytes], too_long: bool) -> None:
        """
        The hot path: give the session one read's lines until input is paused
        or the turn's budget is spent; whatever is left is held, as bytes, for
        L{resume_input} or L{gate_opened}.
        """
        gate = self.factory.gate
        budget = left = gate.left()
        self._handing_over = True
        try:
            for index, line in enumerate(lines):
                if self._paused or left <= 0 or self._closing():
                    self._hold(lines[index:], too_long)
                    if left <= 0:
                        self._wait_for_gate()
                    return
                left -= len(line) + LINE_COST
                self._line(line)
            if too_long:
                if self._paused or self._closing():
                    self._hold([], too_long)
                else:
                    self._refuse_too_long()
        finally:
            self._handing_over = False
            if budget != left:
                gate.spend(budget - left)

    def _hold(self, lines: list[bytes], too_long: bool) -> None:
        """Keep C{lines} (and a refusal after them) for later, unless we are closing."""
        if self._closing():
            return  # nothing more from this user
        if lines:
            self._pending.append(b"\n".join(lines) + b"\n")
        if too_long:
            self._pending.append(_TOO_LONG)

    def _hand_over(self) -> None:
        """
        Give the session the held lines, in order, one at a time, until input is paused.

        Re-entrant calls (the session resuming input from inside C{handle})
        return at once: the loop already running goes on with the next line.
        """
        if self._handing_over:
            return
        self._handing_over = True
        gate = self.factory.gate
        budget = left = gate.left()  # spent once, at the end, as in _feed
        try:
            pending = self._pending
            while pending and not self._paused and not self._gated:
                if self._closing():
                    pending.clear()
                    self._offset = 0
                    return
                if left <= 0 or gate.closed:
                    self._wait_for_gate()
                    return
                block = pending[0]
                if block is _TOO_LONG:
                    pending.pop(0)
                    self._refuse_too_long()
                    continue
                start = self._offset
                end = block.index(b"\n", start)
                if end + 1 >= len(block):
                    pending.pop(0)
                    self._offset = 0
                else:
                    self._offset = end + 1
                line = block[start:end]
                left -= len(line) + LINE_COST
                self._line(line)
        finally:
            self._handing_over = False
            if budget != left:
                gate.spend(budget - left)

    def _wait_for_gate(self) -> None:
        """This turn read all it may: stop reading until the gate calls L{gate_opened}."""
        if not self._gated:
            self._gated = True
            self.factory.gate.hold(self)
            self._update_reading()

    def gate_opened(self) -> None:
        """The input gate opened: hand over what waited, and read again."""
        self._gated = False
        if self._gone:
            return
        self._hand_over()
        self._update_reading()

    def _update_reading(self) -> None:
        """Read the socket only while neither the session nor the gate holds input."""
        reading = not (self._paused or self._gated)
        if reading != self._reading and not self._gone and not self.transport.disconnecting:
            self._reading = reading
            if reading:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def _line(self, line: bytes) -> None:
        """One whole line (without its LF) for the session."""
        raise NotImplementedError

    def _refuse_too_long(self) -> None:
        """Tell the user a line was too long (it was skipped)."""
        raise NotImplementedError

    def _closing(self) -> bool:
        return self._gone or self.transport.disconnecting

    def pause_input(self) -> None:
        """
        Hand the session no more lines, and stop reading the socket, until L{resume_input}.

        Lines already read wait here as they are (at most the rest of one
        read); the kernel and then the sender's own TCP window hold the rest.
        This pauses the transport's reading only: output keeps flowing (the
        L{SendQueue} is a separate producer, for writing).
        """
        if self._paused:
            return
        self._paused = True
        self._update_reading()

    def resume_input(self) -> None:
        """
        Hand over the lines that waited, then read the socket again.

        Safe from a timer, from inside the session's C{handle} (the line
        being handed over finishes first), and after the connection is gone.
        A line handed over may pause input again; then reading stays paused.
        """
        if not self._paused:
            return
        self._paused = False
        if self._gone:
            return
        self._hand_over()
        self._update_reading()

    # -- output -------------------------------------------------------------

    def deliver(self, batch) -> None:
        """Write the events of one turn, rendered as this protocol renders them."""
        raise NotImplementedError

    def close(self, reason: str) -> defer.Deferred:
        """
        Say C{reason} as this protocol says goodbye (L{_close_with}), flush, hang
        up; fires once the connection is gone.  The session has ended already
        (it is the one that calls this).
        """
        raise NotImplementedError

    def _close_with(self, goodbye: bytes) -> defer.Deferred:
        """Write C{goodbye}, flush, hang up; fires once the connection is gone."""
        if self._gone:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closed.append(d)
        if not self.transport.disconnecting:
            self._queue.write(goodbye)
            self._queue.flush()
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            # A peer that never reads would keep the connection half-closed forever.
            self._abort_call = self.factory.clock.callLater(
                CLOSE_GRACE, self.transport.abortConnection
            )
        return d

    def connectionLost(self, reason) -> None:
        self._gone = True
        self._pending.clear()
        self._offset = 0
        self.factory.gate.forget(self)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._drop_call is not None:
            self._drop_call.cancel()
            self._drop()
        self._session.connection_lost()
        self.factory.admission.release(self._host)
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)


def peer_name(addr) -> str:
    """C{host:port} for logs (C{[host]:port} for IPv6), whatever address type Twisted gives."""
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if host is None or port is None:
        return str(addr)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Refuse(Protocol):
    """Says why a connection is refused, then hangs up."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def connectionMade(self) -> None:
        self.transport.write(as_bytes(Refusal("server-full", self._reason)))
        self.transport.loseConnection()


class StreamChatFactory(Factory):
    """Builds one C{protocol_class} per connection, admitted within the limits."""

    log = Logger()
    noisy = False  # the listener logs where it listens; "Starting factory" adds nothing
    protocol_class = None  # each protocol's factory names its protocol

    def __init__(self, hub, registry, clock, admission, limits: Limits = Limits(), gate=None):
        self.hub = hub
        self.registry = registry
        self.clock = clock
        self.admission = admission
        self.limits = limits
        #: Holds input back once a turn read all it may; shared with the service's other
        #: stream front-ends.
        self.gate = gate if gate is not None else InputGate(clock)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        try:
            self.admission.admit(host)
        except ChatError as refusal:
            self.log.warn("Refused a connection from {host}: {why}", host=host, why=str(refusal))
            return _Refuse(str(refusal))
        return self.protocol_class(self, host, peer_name(addr))

    def make_session(self, participant: StreamChatProtocol) -> Session:
        """The chat rules for one new connection (tests give a fake here)."""
        return Session(participant, self.hub, self.registry, self.clock, self.limits)
