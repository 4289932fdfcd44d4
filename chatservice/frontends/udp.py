# -*- test-case-name: tests.test_udp -*-
"""The UDP chat: address-validated join, a per-session secret, then reliable lines both ways.

Wire format (docs/udp-protocol.md):

 - A stranger's C{HELLO} gets a small C{TOKEN t} (never more than three times the request's
   bytes); C{JOIN t NICK} with the token of its address asks to join.  An address that has not
   joined gets nothing but that one token reply, so the port cannot be used to flood a third
   party with spoofed requests.
 - A refused join (invalid or taken nick, server full, shutting down) gets one unnumbered
   C{! reason} datagram and leaves nothing behind: no peer, no admission slot, no timer.
 - An accepted join gets C{SESSION s}, where C{s} is 16 hex digits (64 random bits, new for each
   session), then numbered lines from seq 1.  A repeated JOIN with a valid token from the joined
   address gets C{SESSION s} again and changes nothing (the first may have been lost).
 - After that every datagram from the client starts with C{s} and a space: data and ACK frames
   of L{chatservice.frontends.reliable}, C{PING} (answered C{PONG}) and C{BYE} (ends the session as a
   quit).  A datagram from a joined address without the right secret is ignored: no reply, and
   it is no proof of life.  So whoever can forge a joined user's source address but cannot see
   the user's traffic can neither inject lines, acknowledge the user's lines away, nor use the
   server to send anything to that address.
 - Every datagram the server sends after C{SESSION s} starts with C{s} and a space too: numbered
   lines, ACKs, C{PONG}, C{BYE} and C{!} errors.  The client drops anything else, so whoever can
   forge the server's address toward the client cannot show the user a line, end the session,
   or acknowledge the user's lines away either.  Only C{TOKEN}, C{SESSION} and the one C{! reason}
   refusing a JOIN go without it: the client has no secret yet.
"""

import hashlib
import hmac
import os
import secrets

from twisted.internet import defer, error
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from chatservice.core.errors import ChatError
from chatservice.core.events import Notice, Refusal
from chatservice.core.interfaces import IParticipant
from chatservice.core.limits import Limits
from chatservice.frontends.reliable import (
    AckFrame,
    ControlFrame,
    DataFrame,
    MalformedFrame,
    ReliableChannel,
    parse_frame,
)
from chatservice.core.render import RenderCache, as_bytes
from chatservice.core.session import Session

#: The largest datagram a client may send (its secret included), and the largest the server sends.
MAX_DATAGRAM = 1200
#: A token is good for the epoch it was made in and the next one.
TOKEN_EPOCH = 60.0
_TOKEN_HEX = 10  # 40 bits; with the newline the reply is 17 bytes
#: Random bytes in a session secret: 64 bits, written as 16 lowercase hex digits.
SESSION_SECRET_BYTES = 8
#: C{"<s> "}: the secret and its space, in front of every datagram of a session, both ways.
SESSION_PREFIX_LEN = 2 * SESSION_SECRET_BYTES + 1
#: Stands in for a numbered line that was too long, so its refusal keeps its place.
TOO_LONG = b"\x00too long"
#: The session takes JOIN's nick as this command, so a nick such as C{/help} is refused as a
#: nick rather than run as a command (JOIN names a nick, never a command).
_JOIN_AS = "/nick "


@implementer(IParticipant)
class UdpPeer:
    """
    One address that asked to join: its session, its secret and its reliable channel.

    A peer is pending until its session has joined: it sends nothing numbered and takes no
    datagram.  A refusal then (or a close) is sent as one unnumbered C{! } datagram, and the peer
    is forgotten at once.  Once joined it sends C{SESSION s}, then numbered lines; from then
    on every datagram it sends starts with C{s} and a space.
    """

    via = "udp"
    echo = False
    nick = None
    room = None
    log = Logger()

    def __init__(self, chat: "DatagramChat", address) -> None:
        self._chat = chat
        self.address = address
        #: Where the user connects from, for logs: C{"host:port"}.
        self.peer = f"{address[0]}:{address[1]}"
        self.last_heard = chat.clock.seconds()
        self.session_secret = secrets.token_hex(SESSION_SECRET_BYTES).encode("ascii")
        self.channel = ReliableChannel(
            chat.clock,
            self.send_in_session,
            self._line_received,
            self._gave_up,
            # The secret, its space and the newline go around each frame: the whole fits.
            max_payload=MAX_DATAGRAM - SESSION_PREFIX_LEN - 1,
            max_line=MAX_DATAGRAM,
            on_retransmit=chat.hub.stats.retransmitted,
            peer=address,
        )
        self.session = Session(self, chat.hub, chat.registry, chat.clock, chat.limits)
        self._announced = False
        self._closing = False
        self._gone = False
        self._delivering = False  # inside deliver: a give-up ends the session after the turn
        self._close_waiters: list[defer.Deferred] = []

    def start(self, nick: str) -> None:
        """Ask the session for C{nick}; the answer may come now or later."""
        self.session.start(_JOIN_AS + nick)

    def _send(self, datagram: bytes) -> None:
        """Send without the secret: only for C{SESSION} and an unnumbered refusal before it."""
        self._chat.send(datagram, self.address)

    def send_in_session(self, datagram: bytes) -> None:
        """
        Send one datagram of the session: the secret, a space, the frame.

        The client drops whatever comes without it, so a forger who knows the client's address
        but not the secret cannot speak for the server.
        """
        self._chat.send(self.session_secret + b" " + datagram, self.address)

    def _announce(self) -> None:
        """Tell the client its session secret (again, for a repeated JOIN)."""
        if not self._announced:
            self._announced = True
            self.log.info("UDP peer {address} joined as {nick}", address=self.address,
                          nick=self.nick)
        self._send(b"SESSION " + self.session_secret)

    def rejoined(self) -> None:
        """A repeated JOIN with a valid token: the first C{SESSION} may have been lost."""
        if self._announced and not self._gone:
            self._announce()

    def authenticated(self, datagram: bytes) -> bytes | None:
        """
        The frame after this peer's secret, or None if the datagram does not start with it.

        Compared in constant time, so the answer's timing tells a forger nothing about the secret.
        """
        if not self._announced:
            return None
        head, _, frame = datagram.partition(b" ")
        if not hmac.compare_digest(head, self.session_secret):
            return None
        return frame

    def frame_received(self, frame) -> None:
        """A frame that came with this peer's secret."""
        if isinstance(frame, DataFrame) and frame.more:
            # Clients send one line per datagram; a continued line is too long.
            frame = DataFrame(frame.seq, False, TOO_LONG)
        if isinstance(frame, (DataFrame, AckFrame)):
            self.channel.frame_received(frame)
        elif frame.verb == "PING":
            self.send_in_session(b"PONG")
        elif frame.verb == "BYE":
            self._bye()

    def _line_received(self, line: bytes) -> None:
        if line is TOO_LONG:  # identity: a client typing these bytes is just text
            self._chat.hub.tell(
                self, Refusal("too-long", f"message too long (max {MAX_DATAGRAM} bytes)")
            )
            return
        self.session.handle(line.decode("utf-8", errors="replace"))

    def pause_input(self) -> None:
        """
        Nothing to do: UDP cannot stop its sender.

        The session holds the lines that come meanwhile in its own bounded queue.
        """

    def resume_input(self) -> None:
        """Nothing to do: see L{pause_input}; the session hands its held lines over itself."""

    def deliver(self, batch) -> None:
        """Number and send each line as its own frame (pieces if long), after C{SESSION}."""
        if self._closing or self._gone:
            return  # the goodbye is the last line
        if not self._announced:
            if not self.session.joined:
                self._refused(batch)
                return
            self._announce()
        render, current, send_line = self._chat.render, self.room, self.channel.send_line
        self._delivering = True
        try:
            for event in batch:
                data = render(event, current)
                if not data:
                    continue  # tags without text (IRC's TAGMSG): nothing for UDP users
                if b"\n" in data:
                    for line in data.split(b"\n"):
                        send_line(line)
                else:
                    send_line(data)
        finally:
            self._delivering = False

    def _refused(self, events) -> None:
        """Before the join: a refusal ends the attempt; nothing else is shown."""
        for event in events:
            if isinstance(event, Refusal):
                self.log.info(
                    "UDP join from {address} refused: {text}", address=self.address,
                    text=event.text,
                )
                self._send_unnumbered_and_forget(event, "refused")
                return

    def _send_unnumbered_and_forget(self, refusal: Refusal, reason: str) -> None:
        """One C{! text} datagram, then the attempt is over: no retransmission, no timer."""
        self._send(as_bytes(refusal, line_end=b""))
        self._gone_with(reason)

    def close(self, reason: str) -> defer.Deferred:
        """
        Send C{reason} reliably, wait for its ACK (bounded by the channel), say BYE, hang up.

        Only the session calls this, once it has ended: closing says goodbye and never
        ends the session itself.
        """
        if self._gone:
            return defer.succeed(None)
        if not self._announced:
            # Never joined: there is no numbered stream to say goodbye on.
            self.log.info(
                "UDP join from {address} ended before joining: {reason}",
                address=self.address, reason=reason,
            )
            self._send(as_bytes(Refusal("closed", reason), line_end=b""))
            self._hang_up()
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if not self._closing:  # one goodbye; a second call only waits for it
            self._closing = True
            self.channel.send_line(self._chat.render(Notice(reason)))
            goodbye = self.channel.drained()
            goodbye.addCallback(self._said_goodbye)
            goodbye.addErrback(
                lambda f: self.log.failure("Goodbye to {address} failed", f, address=self.address)
            )
        return d

    def _said_goodbye(self, _) -> None:
        try:
            if not self.channel.closed:
                self.send_in_session(b"BYE")
        finally:
            self._hang_up()

    def _bye(self) -> None:
        """The client's C{BYE}: it leaves at once, as a quit; one C{BYE} answers it."""
        self.log.info("UDP peer {address} ({nick}) said BYE", address=self.address, nick=self.nick)
        self.send_in_session(b"BYE")
        self._gone_with("quit")

    def _gave_up(self, reason: str) -> None:
        """
        The channel gave up on the client: hang up, and end the session.

        The channel gives up on a reader too slow from inside L{deliver}, while the hub hands
        out a turn; ending the session there would take this user out of the rooms being
        walked.  Then the session ends right after the turn instead, once.
        """
        self.log.info(
            "UDP peer {address} ({nick}) gone: {reason}",
            address=self.address, nick=self.nick, reason=reason,
        )
        if self._delivering and not self._gone:
            self._hang_up()
            self._chat.clock.callLater(0, self.session.end, reason)
            return
        self._gone_with(reason)

    def expire_now(self, reason: str = "timed out") -> None:
        """Drop the peer at once (silent too long, or the port is closing)."""
        self._gone_with(reason)

    def _gone_with(self, reason: str) -> None:
        """
        The client is gone (BYE, silence, refused, the port closing): hang up, then tell the
        session, which ends once whoever asks first (a no-op if it has ended already).
        """
        if self._gone:
            return
        self._hang_up()
        self.session.end(reason)

    def _hang_up(self) -> None:
        """Stop the channel and leave the peer table; nothing is sent from now on."""
        if self._gone:
            return
        self._gone = True
        self.channel.close()
        self._chat.forget(self)
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)


class DatagramChat(DatagramProtocol):
    """The UDP port: peer table, address validation, session secrets, datagrams to sessions."""

    log = Logger()
    noisy = False  # the listener logs where it listens; "Starting protocol" adds nothing
    #: Read datagrams up to this size, so an oversized one is seen whole and refused.
    max_datagram_read = 65535

    def __init__(self, hub, registry, clock, admission, limits: Limits = Limits(),
                 secret: bytes | None = None) -> None:
        """
        @param secret: The key for address tokens (random if None); session secrets are
            always random.
        """
        self.hub = hub
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
        """Every address with a peer: joined, or waiting for the nick registry's answer."""
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
        if peer is None:
            self._stranger(datagram, received, address)
            return
        frame_bytes = peer.authenticated(datagram)
        if frame_bytes is None:
            self._without_secret(peer, datagram, address)
            return
        peer.last_heard = self.clock.seconds()  # only the secret shows the user is alive
        if len(datagram) > MAX_DATAGRAM:
            self._oversized(peer, frame_bytes)
            return
        try:
            frame = parse_frame(frame_bytes)
        except MalformedFrame:
            peer.send_in_session(b"! malformed datagram (see docs/udp-protocol.md)")
            return
        peer.frame_received(frame)

    def _control(self, datagram: bytes):
        """C{datagram} as a control frame, or None (too long, malformed, or not control)."""
        if len(datagram) > MAX_DATAGRAM:
            return None
        try:
            frame = parse_frame(datagram)
        except MalformedFrame:
            return None
        return frame if isinstance(frame, ControlFrame) else None

    def _without_secret(self, peer: UdpPeer, datagram: bytes, address) -> None:
        """
        A joined (or pending) address sent no secret: anyone may have forged it, so it gets no
        reply, with one exception.  A repeated JOIN carrying the address's token gets
        C{SESSION} again, since only the address's owner can have the token.
        """
        frame = self._control(datagram)
        if (frame is not None and frame.verb == "JOIN" and len(frame.args) >= 2
                and self._token_ok(address, frame.args[0])):
            peer.rejoined()

    def _oversized(self, peer: UdpPeer, frame_bytes: bytes) -> None:
        """Refuse a datagram over the limit, in sequence if it was numbered."""
        head = frame_bytes[:24].split(b" ", 1)[0]
        try:
            frame = parse_frame(head + b" x")
        except MalformedFrame:
            frame = None
        if isinstance(frame, DataFrame):
            peer.frame_received(DataFrame(frame.seq, False, TOO_LONG))
        else:
            peer.send_in_session(f"! datagram too long (max {MAX_DATAGRAM} bytes)".encode())

    def _stranger(self, datagram: bytes, received: int, address) -> None:
        """
        An address that has not joined: HELLO and JOIN only.

        The token reply is sent only if it is at most three times the size of
        the request, so a spoofed HELLO cannot be amplified.
        """
        frame = self._control(datagram)
        if frame is None:
            return
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
            if self.hub.closing:
                raise ChatError("server shutting down")
            self.admission.admit(host)
        except ChatError as refusal:
            self.log.info(
                "UDP join from {address} refused: {text}", address=address, text=str(refusal)
            )
            self.send(as_bytes(Refusal(refusal.kind, str(refusal)), line_end=b""), address)
            return
        peer = UdpPeer(self, address)
        self._peers[address] = peer
        self._arm_sweeper()
        peer.start(nick)

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
            self.log.info(
                "UDP peer {address} ({nick}) expired", address=peer.address, nick=peer.nick
            )
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
