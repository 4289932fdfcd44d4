# -*- test-case-name: tests.test_tcp -*-
"""The TCP line protocol for telnet, nc and the bundled client.

A connection is one L{IParticipant} (the stream machinery: L{StreamChatProtocol}):
bytes become lines for its session, and the room's events become
CRLF-terminated UTF-8 lines.  No chat logic here.  What is the line
protocol's own:
 - telnet (L{chatservice.frontends.telnet}): commands answered or applied, CR LF and
   CR NUL made LF, before framing.  Skipped for a read with neither IAC nor CR in it,
   which is every read nc sends;
 - a line is UTF-8 text (invalid bytes become U+FFFD) with its backspaces and
   DELs applied, longer than C{--max-line} refused with C{! line too long};
 - events are rendered as text by L{RenderCache}, once per way of seeing them.
"""

from twisted.internet import defer
from twisted.logger import Logger

from chatservice.core.events import Notice, Refusal
from chatservice.core.limits import Limits
from chatservice.core.render import RenderCache, as_bytes
from chatservice.frontends.stream import (
    CLOSE_GRACE,
    SendQueue,
    StreamChatFactory,
    StreamChatProtocol,
    peer_name,
)
from chatservice.frontends.telnet import BACKSPACE, DELETE, TelnetDecoder, erase


class LineChatProtocol(StreamChatProtocol):
    """A telnet or nc user: one UTF-8 line in, one call to the session."""

    via = "tcp"
    log = Logger()

    def __init__(self, factory: "LineChatFactory", host: str, peer: str | None = None) -> None:
        super().__init__(factory, host, peer)
        self._telnet = TelnetDecoder()

    def _decode(self, data: bytes) -> bytes:
        """Telnet: commands answered or applied, line ends made LF."""
        telnet = self._telnet
        if b"\xff" in data or not telnet.idle:
            return self._telnet_commands(data)
        if b"\r" in data:
            return telnet.line_ends(data)
        return data

    def _telnet_commands(self, data: bytes) -> bytes:
        """Answer and apply the telnet commands in C{data}; return its line data."""
        decoded = self._telnet.decode(data)
        if decoded.replies and not self._gone and not self.transport.disconnecting:
            self._queue.write(decoded.replies)  # in order with the output
        if decoded.commands:
            self.log.debug(
                "Telnet from {host} ({nick}): {commands}; answered: {answers}",
                host=self._host, nick=self.nick,
                commands=decoded.commands, answers=decoded.answers,
            )
        if decoded.abandoned:
            self.log.warn(
                "Telnet subnegotiation from {host} ({nick}) too long; abandoned",
                host=self._host, nick=self.nick,
            )
        if decoded.kill:  # IP or EL: the line being typed is discarded
            self._buffer = b""
            self._discarding = False
        return decoded.data

    def _line(self, line: bytes) -> None:
        """One whole line to the session: UTF-8 (invalid bytes become U+FFFD), erasing applied."""
        if len(line) > self.MAX_LENGTH:
            self._refuse_too_long()
            return
        text = line.decode("utf-8", errors="replace")
        if BACKSPACE in line or DELETE in line:
            text = erase(text)
        self._session.handle(text)

    def _refuse_too_long(self) -> None:
        self._refuse(f"line too long (max {self.MAX_LENGTH} bytes)")

    def _refuse(self, text: str) -> None:
        self.factory.hub.tell(self, Refusal("too-long", text))

    def deliver(self, batch) -> None:
        """Write the events as lines; shared runs are encoded once for everyone."""
        if not self._gone and not self.transport.disconnecting:
            self._queue.write(self.factory.render.encode(batch, self.room))

    def close(self, reason: str) -> defer.Deferred:
        """
        Say C{reason}, flush, hang up; fires once the connection is gone.

        The session has ended already (it is the one that calls this).
        """
        return self._close_with(as_bytes(Notice(reason)))


class LineChatFactory(StreamChatFactory):
    """Builds one L{LineChatProtocol} per connection, admitted within the limits."""

    protocol_class = LineChatProtocol

    def __init__(self, hub, registry, clock, admission, limits: Limits = Limits(), gate=None):
        super().__init__(hub, registry, clock, admission, limits, gate=gate)
        #: Shared by every connection: an event is rendered once per way of seeing it.
        self.render = RenderCache()


#: Defined in L{chatservice.frontends.stream}; still importable from here, where they began.
__all__ = ["CLOSE_GRACE", "LineChatFactory", "LineChatProtocol", "SendQueue", "peer_name"]
