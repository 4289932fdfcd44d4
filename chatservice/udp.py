# -*- test-case-name: tests.test_udp -*-
"""The UDP chat: address-validated join, then reliable lines both ways.

Wire format (docs/udp-protocol.md): C{HELLO} gets a small C{TOKEN t} (never
more than three times the request's bytes); C{JOIN t NICK} admits the address
if C{t} is its token.  From then on data and ACK frames of
L{chatservice.reliable} carry the same lines as TCP, and C{PING} gets C{PONG}.
An address that has not joined gets nothing but that one token reply, so the
port cannot be used to flood a third party with spoofed requests.
"""

import hashlib
import hmac
import os

from twisted.internet import defer, error
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from chatservice.errors import ChatError
from chatservice.events import Notice, Refusal
from chatservice.interfaces import IParticipant
from chatservice.limits import Limits
from chatservice.reliable import (
    AckFrame,
    ControlFrame,
    DataFrame,
    MalformedFrame,
    ReliableChannel,
    parse_frame,
)
from chatservice.render import RenderCache
from chatservice.session import Session

#: The largest datagram a client may send, and the largest the server sends.
MAX_DATAGRAM = 1200
#: A token is good for the epoch it was made in and the next one.
TOKEN_EPOCH = 60.0
_TOKEN_HEX = 10  # 40 bits; with the newline the reply is 17 bytes
#: Stands in for a numbered line that was too long, so its refusal keeps its place.
TOO_LONG = b"\x00too long"


@implementer(IParticipant)
class UdpPeer:
    """One joined address: its reliable channel and its session."""

    via = "udp"
    nick = None
    log = Logger()

    def __init__(self, chat: "DatagramChat", address) -> None:
        self._chat = chat
        self.address = address
        self.last_heard = chat.clock.seconds()
        self.channel = ReliableChannel(
            chat.clock,
            self._send,
            self._line_received,
            self._gave_up,
            max_payload=MAX_DATAGRAM - 1,  # send() adds a newline
            max_line=MAX_DATAGRAM,
        )
        self.session = Session(self, chat.room, chat.registry, chat.clock, chat.limits)
        self._closing = False
        self._gone = False
        self._close_waiters: list[defer.Deferred] = []

    def _send(self, datagram: bytes) -> None:
        self._chat.send(datagram, self.address)

    def datagram_received(self, frame) -> None:
        """A frame from this peer's address."""
        self.last_heard = self._chat.clock.seconds()
        if isinstance(frame, DataFrame) and frame.more:
            # Clients send one line per datagram; a continued line is too long.
            frame = DataFrame(frame.seq, False, TOO_LONG)
        if isinstance(frame, (DataFrame, AckFrame)):
            self.channel.frame_received(frame)
        elif frame.verb == "PING":
            self._send(b"PONG")

    def _line_received(self, line: bytes) -> None:
        if line is TOO_LONG:  # identity: a client typing these bytes is just text
            self._chat.room.tell(self, Refusal(f"message too long (max {MAX_DATAGRAM} bytes)"))
            return
        self.session.handle(line.decode("utf-8", errors="replace"))

    def deliver(self, events) -> None:
        """Number and send each event as its own line (pieces if long)."""
        if self._closing or self._gone:
            return  # the goodbye is the last line
        for event in events:
            self.channel.send_line(self._chat.render(event))

    def close(self, reason: str) -> defer.Deferred:
        """Send C{reason} reliably, wait for its ACK (bounded by the channel), say BYE."""
        if self._gone:
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if not self._closing:
            self.session.end(reason)  # nothing more from this user once we say goodbye
            self._closing = True
            self.channel.send_line(self._chat.render(Notice(reason)))
            goodbye = self.channel.drained()
            goodbye.addCallback(self._said_goodbye, reason)
            goodbye.addErrback(
                lambda f: self.log.failure("Goodbye to {address} failed", f, address=self.address)
            )
        return d

    def _said_goodbye(self, _, reason: str) -> None:
        try:
            if not self.channel.closed:
                self._send(b"BYE")
        finally:
            self._forget(reason)

    def _gave_up(self, reason: str) -> None:
        self.log.info("UDP peer {nick} gone: {reason}", nick=self.nick, reason=reason)
        self._forget(reason)

    def expire_now(self, reason: str = "timed out") -> None:
        """Drop the peer at once (silent too long, or the port is closing)."""
        self._forget(reason)

    def _forget(self, reason: str) -> None:
        """End the session (if not yet), stop the channel, leave the peer table."""
        self._gone = True
        self.channel.close()
        self.session.end(reason)
        self._chat.forget(self)
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)


class DatagramChat(DatagramProtocol):
    """The UDP port: peer table, address validation, datagrams to sessions."""

    log = Logger()
    #: Read datagrams up to this size, so an oversized one is seen whole and refused.
    max_datagram_read = 65535

    def __init__(self, room, registry, clock, admission, limits: Limits = Limits(),
                 secret: bytes | None = None) -> None:
        self.room = room
        self.registry = registry
        self.clock = clock
        self.admission = admission
        self.limits = limits
        self._secret = secret if secret is not None else os.urandom(32)
        self._peers: dict[tuple, UdpPeer] = {}
        #: Shared by every peer: an event is encoded once for all of them.
        self.render = RenderCache(line_end=b"")
        self._sweeper = None

    def peers(self) -> list[UdpPeer]:
        """Every joined address's peer."""
        return list(self._peers.values())

    # -- tokens -------------------------------------------------------------

    def token_for(self, address, epoch: int | None = None) -> bytes:
        """The token C{address} must echo; stateless, so unjoined addresses cost no memory."""
        if epoch is None:
            epoch = int(self.clock.seconds() // TOKEN_EPOCH)
        message = f"{address[0]}|{address[1]}|{epoch}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        return digest[:_TOKEN_HEX].encode("ascii")

    def _token_ok(self, address, token: bytes) -> bool:
        epoch = int(self.clock.seconds() // TOKEN_EPOCH)
        return any(
            hmac.compare_digest(token, self.token_for(address, e))
            for e in (epoch, epoch - 1)
        )

    # -- datagrams ------------------------------------------------------------

    def send(self, datagram: bytes, address) -> None:
        """
        Send one datagram, ending in a newline so nc -u shows it as a line.

        A send the kernel refuses (full buffer, firewall) is a lost datagram,
        which retransmission already recovers from; it never breaks the peer.
        """
        if self.transport is None:
            return
        try:
            self.transport.write(datagram + b"\n", address)
        except (OSError, error.MessageLengthError) as e:
            self.log.debug("A datagram to {address} was lost: {e}", address=address, e=e)

    def datagramReceived(self, datagram: bytes, address) -> None:
        received = len(datagram)
        datagram = datagram.rstrip(b"\r\n")
        peer = self._peers.get(address)
        if peer is not None:
            peer.last_heard = self.clock.seconds()  # any datagram shows the user is alive
        try:
            if len(datagram) > MAX_DATAGRAM:
                self._oversized(peer, datagram)
                return
            frame = parse_frame(datagram)
        except MalformedFrame:
            if peer is not None:
                self.send(b"! malformed datagram (see docs/udp-protocol.md)", address)
            return
        if peer is not None:
            peer.datagram_received(frame)
        elif isinstance(frame, ControlFrame):
            self._stranger(frame, received, address)

    def _oversized(self, peer, datagram: bytes) -> None:
        """Refuse a datagram over the limit, in sequence if it was numbered."""
        if peer is None:
            return
        head = datagram[:24].split(b" ", 1)[0]
        try:
            frame = parse_frame(head + b" x")
        except MalformedFrame:
            frame = None
        if isinstance(frame, DataFrame):
            peer.datagram_received(DataFrame(frame.seq, False, TOO_LONG))
        else:
            self.send(f"! datagram too long (max {MAX_DATAGRAM} bytes)".encode(), peer.address)

    def _stranger(self, frame: ControlFrame, received: int, address) -> None:
        """
        An address that has not joined: HELLO and JOIN only.

        The token reply is sent only if it is at most three times the size of
        the request, so a spoofed HELLO cannot be amplified.
        """
        if frame.verb == "HELLO":
            reply = b"TOKEN " + self.token_for(address)
            if len(reply) + 1 <= 3 * received:
                self.send(reply, address)
        elif frame.verb == "JOIN" and len(frame.args) >= 2:
            if self._token_ok(address, frame.args[0]):
                self._join(address, frame.args[1].decode("utf-8", errors="replace"))

    def _join(self, address, nick: str) -> None:
        host = address[0]
        try:
            if self.room.closing:
                raise ChatError("server shutting down")
            self.admission.admit(host)
        except ChatError as refusal:
            self.send(b"! " + str(refusal).encode(), address)
            return
        peer = UdpPeer(self, address)
        self._peers[address] = peer
        self._arm_sweeper()
        peer.session.start(nick)

    def forget(self, peer: UdpPeer) -> None:
        """Drop C{peer} from the table and give back its admission."""
        if self._peers.get(peer.address) is peer:
            del self._peers[peer.address]
            self.admission.release(peer.address[0])
        if not self._peers:
            self._stop_sweeper()

    # -- expiry ---------------------------------------------------------------

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.clock.callLater(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        return max(0.05, self.limits.udp_timeout / 4)

    def _sweep(self) -> None:
        """Expire peers silent for longer than --udp-timeout."""
        self._sweeper = None
        deadline = self.clock.seconds() - self.limits.udp_timeout
        for peer in [p for p in self._peers.values() if p.last_heard < deadline]:
            self.log.info("UDP peer {nick} expired", nick=peer.nick)
            peer.expire_now()
        if self._peers:
            self._arm_sweeper()

    def _stop_sweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None

    def stopProtocol(self) -> None:
        """The port is closing: stop every timer; the room already said goodbye."""
        self._stop_sweeper()
        for peer in self.peers():
            peer.expire_now("server shutting down")
