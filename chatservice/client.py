# -*- test-case-name: tests.test_client -*-
"""chatroom-client: a terminal or pipe user of the chat, over TCP, TLS or UDP.

In a pipe (scripts, bots) it prints every server line as it arrives and
sends each stdin line; at stdin EOF it sends C{/quit} once its lines are out,
and exits 0.  A refused nick exits 2, an unreachable or vanished server 1, bad
usage 64.  Built on Twisted: StandardIO for the console, an endpoint for TCP
(wrapped in TLS with C{--tls}), L{chatservice.frontends.reliable} for UDP.
When stdin and stdout are both terminals, L{chatservice.terminal} replaces the
console with an interactive one (the rules differ there: see L{ChatClient}).

Every wait is bounded, so the client never hangs: over UDP the handshake
must finish within L{HANDSHAKE_TIMEOUT} seconds, and a joined client gives up
once the server has been silent for L{SILENCE_LIMIT} seconds (it pings while
idle, so a live server is never silent that long).
"""

from __future__ import annotations

import hmac
import re
import sys
from typing import Optional

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import defer, endpoints, error, ssl, task
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.stdio import StandardIO
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from chatservice import __version__
from chatservice.certs import certificate_blocks
from chatservice.frontends.reliable import (
    HEADER_ROOM,
    ControlFrame,
    DataFrame,
    MalformedFrame,
    ReliableChannel,
    parse_frame,
)

PROGRAM = "chatroom-client"
EXIT_OK, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2, 64
#: The server's welcome line starts so; before it, a "! " line is a refusal.
WELCOME_PREFIX = "* you are "
GREETING_PREFIX = "* welcome to chatroom"

#: UDP: the whole handshake (HELLO, TOKEN, JOIN, SESSION, the welcome line)
#: must be done within this many seconds, or the client exits 1.  Ten seconds
#: is 20 tries at HANDSHAKE_INTERVAL: enough for a lossy link, short enough
#: for a person waiting at a prompt.
HANDSHAKE_TIMEOUT = 10.0
#: UDP: how often HELLO, then JOIN, is sent again until answered.
HANDSHAKE_INTERVAL = 0.5
#: UDP: a joined client that has heard nothing from the server for this
#: long exits 1.  See PROBE_INTERVAL for why a live server is never this quiet.
SILENCE_LIMIT = 30.0
#: UDP: ping once the server has been quiet this long (it expires a peer
#: silent for --udp-timeout, 60 s by default, so we speak well within that).
PING_INTERVAL = 15.0
#: UDP: once the server is quiet past PING_INTERVAL, ping this often until it
#: answers.  From 15 s to 30 s of silence that is 15 pings; at 20% loss each
#: way a ping and its PONG both arrive with p = 0.64, so all 15 fail with
#: p = 0.36**15 = 2e-7: a lossy but live server is kept, while a dead one is
#: noticed in half a minute, about what a person waits before giving up.
PROBE_INTERVAL = 1.0
#: After /quit, wait at most this long for the server's goodbye.
QUIT_GRACE = 3.0
#: The largest datagram the client sends (the server's limit too).
UDP_MAX_DATAGRAM = 1200
#: "<16 hex digits> ": the session secret that starts every datagram of the session, both ways.
SESSION_PREFIX_LEN = 17
#: The longest line, in UTF-8 bytes, that fits one UDP datagram with its
#: session and seq headers (HEADER_ROOM: the longest "<seq>+ "); clients may
#: not split lines, so longer ones are refused locally.
UDP_MAX_LINE = UDP_MAX_DATAGRAM - SESSION_PREFIX_LEN - HEADER_ROOM
#: UDP: stop reading stdin while this many of our lines are unacknowledged.
UDP_INPUT_PAUSE = 512

_SESSION = re.compile(rb"[0-9a-f]{16}\Z")
_SLACK = 1e-6  # float tolerance when comparing elapsed time with a limit


class Options(usage.Options):
    """chatroom-client's command line."""

    synopsis = (
        f"Usage: {PROGRAM} --name NAME [--host HOST] [--port PORT]"
        " [--udp | --tls [--cafile FILE]]"
    )
    longdesc = (
        "Joins the chatroom as NAME, prints every server line and sends each line"
        " read from stdin; at end of input it sends /quit and exits. Exit status:"
        " 0 done, 1 server unreachable or gone, 2 nickname refused, 64 bad usage."
        f" UDP never waits for ever: the handshake must finish within"
        f" {HANDSHAKE_TIMEOUT:g} s, and once joined the client gives up when the"
        f" server has been silent for {SILENCE_LIMIT:g} s (it pings every"
        f" {PING_INTERVAL:g} s while idle); a host that reports the port"
        " unreachable ends it at once. --tls checks the server's certificate"
        " against --host, using the system's trusted CAs unless --cafile is given."
    )
    optFlags = [
        ["udp", "u", "Speak the UDP protocol (default port 12346)."],
        ["tls", None, "Speak TLS over TCP and verify the server's certificate."],
    ]
    optParameters = [
        ["name", "n", None, "Nickname to join with (required)."],
        ["host", None, "127.0.0.1", "Server host name or address."],
        ["port", "p", None, "Server port (default 12345, or 12346 with --udp).", int],
        ["cafile", None, None, "With --tls: trust the CA certificate(s) in this PEM file"
         " instead of the system's."],
    ]

    def opt_help(self) -> None:
        """Display this help and exit."""
        _print_and_exit(str(self))

    def opt_version(self) -> None:
        """Display chatroom-client's version and exit."""
        _print_and_exit(f"{PROGRAM} (chatroom) {__version__}")

    def postOptions(self) -> None:
        if not self["name"]:
            raise usage.UsageError("--name is required")
        if self["udp"] and self["tls"]:
            raise usage.UsageError("--tls works over TCP only, not with --udp")
        if self["cafile"] is not None and not self["tls"]:
            raise usage.UsageError("--cafile needs --tls")
        self["trust"] = None
        if self["cafile"] is not None:
            self["trust"] = load_trust_root(self["cafile"])
        if self["port"] is None:
            self["port"] = 12346 if self["udp"] else 12345


def _print_and_exit(text: str) -> None:
    """Print C{text} for --help or --version and exit 0, quietly if stdout is a closed pipe."""
    try:
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # e.g. "| head -1": the reader has what it wanted
    sys.exit(0)


def load_trust_root(path: str):
    """
    The CA certificates in the PEM file C{path}, as a trust root for
    L{ssl.optionsForClientTLS}.

    @raise usage.UsageError: If the file cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise usage.UsageError(f"cannot read --cafile {path}: {e.strerror}")
    blocks = certificate_blocks(pem)
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except (crypto.Error, ValueError):
        raise usage.UsageError(f"--cafile {path} holds a certificate that cannot be read")
    if not certificates:
        raise usage.UsageError(f"--cafile {path} holds no PEM certificate")
    if len(certificates) == 1:
        return certificates[0]
    return ssl.trustRootFromCertificates(certificates)


def is_nick_refusal(line: str) -> bool:
    """Whether a refusal before the welcome is about the nickname (another may do)."""
    return line.startswith(("! invalid nickname", "! nickname "))


class ChatClient:
    """
    The client's rules, whatever carries the bytes.

    A person at a terminal (C{interactive}) is treated as a person: a refused
    nickname asks for another (L{asking_name}) instead of ending the program,
    and a connection that ends without our C{/quit} is a lost connection,
    said so and exit 1.  A pipe gets what scripts rely on: exit 2 on a refused
    nickname, 0 whenever the server ends a joined session.

    @param write_out: prints one server line for the user.
    @param finished: fires with the exit code.
    """

    def __init__(self, name: str, write_out, finished: defer.Deferred, clock,
                 interactive: bool = False) -> None:
        self.name = name
        self._write_out = write_out
        self._finished = finished
        self._clock = clock
        self.interactive = interactive
        self.joined = False
        self.asking_name = False
        self._quitting = False
        self._eof = False
        self._queued: list[str] = []
        self.link = None  # set by the transport: send_line(str), quit(), retry_name(str)
        self.console = None  # set once stdin is open: pause_reading(), resume_reading()

    def server_line(self, line: str) -> None:
        """One line from the server: show it, and follow the login."""
        self._write_out(line)
        if self.joined:
            return
        if line.startswith(GREETING_PREFIX):
            self.link.send_line(self.name)
        elif line.startswith(WELCOME_PREFIX):
            self.joined = True
            queued, self._queued = self._queued, []
            for text in queued:
                self.link.send_line(text)
            if self._eof:
                self._quit()
        elif line.startswith("! "):
            if self.interactive and is_nick_refusal(line):
                self.asking_name = True
            else:
                self.finish(EXIT_REFUSED)

    def show(self, line: str) -> None:
        """Show a line to the user that does not take part in the login."""
        self._write_out(line)

    def user_line(self, text: str) -> None:
        """One line typed (or piped) by the user: the nickname asked for, or a chat line."""
        if self._quitting:
            return
        if self.asking_name:
            if text.strip():
                self.asking_name = False
                self.name = text.strip()
                self.link.retry_name(self.name)
            return
        if self.joined:
            self.link.send_line(text)
        else:
            self._queued.append(text)

    def user_done(self) -> None:
        """stdin reached EOF: quit once joined and our lines are out."""
        self._eof = True
        if self.joined:
            self._quit()

    @property
    def done(self) -> bool:
        """Whether the exit code is decided."""
        return self._finished.called

    def leave(self) -> None:
        """The person at the terminal is done (Ctrl-C, Ctrl-D): C{/quit} if joined, else end."""
        if self.joined:
            self._quit()
        else:
            self.finish(EXIT_OK)

    def pause_input(self) -> None:
        """Stop reading stdin for a while (the link is full)."""
        if self.console is not None:
            self.console.pause_reading()

    def resume_input(self) -> None:
        """Read stdin again."""
        if self.console is not None:
            self.console.resume_reading()

    def _quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        self.link.quit()

    def finish(self, code: int) -> None:
        """End the program with C{code} (the first call wins)."""
        if not self._finished.called:
            self._finished.callback(code)

    def connection_lost(self) -> None:
        """The server hung up or is gone."""
        if not self.interactive:
            self.finish(EXIT_OK if self.joined else EXIT_UNREACHABLE)
        elif self._quitting:
            self.finish(EXIT_OK)
        elif self.done:
            pass
        else:
            self.show("! the connection to the server was lost")
            self.finish(EXIT_UNREACHABLE)


class _TcpLink(LineReceiver):
    """The TCP (or TLS) connection to the server."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.lost_reason: Optional[Failure] = None
        client.link = self

    def lineReceived(self, line: bytes) -> None:
        self.client.server_line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def send_line(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def quit(self) -> None:
        self.sendLine(b"/quit")

    def retry_name(self, name: str) -> None:
        """After a refused nickname the server asks again: answer with C{name}."""
        self.send_line(name)

    def connectionLost(self, reason) -> None:
        self.lost_reason = reason
        self.client.connection_lost()


def describe_tls_failure(reason: Optional[Failure], host: str) -> Optional[str]:
    """
    Say in plain words why a TLS connection failed, or None if C{reason} is
    no TLS failure (a plain hang-up).

    Twisted reports a certificate from an untrusted CA as OpenSSL's
    "certificate verify failed", and a certificate for another host name as
    service_identity's C{VerificationError}.
    """
    if reason is None:
        return None
    if reason.check(VerificationError):
        return (
            f"certificate verification failed: the server's certificate is not valid for {host}"
        )
    if reason.check(SSL.Error):
        errors = reason.value.args[0] if reason.value.args else []
        details = "; ".join(
            str(part[-1]) for part in errors if isinstance(part, tuple) and part
        ) or str(reason.value)
        if "certificate verify failed" in details:
            return (
                "certificate verification failed: the server's certificate is not signed"
                " by a trusted CA"
            )
        return f"TLS handshake failed ({details})"
    return None


class _UdpLink(DatagramProtocol):
    """
    The UDP protocol's client end: handshake, session secret, a reliable
    channel, keepalive, and bounded waits everywhere.

    Before C{SESSION} only C{TOKEN}, C{SESSION} and an unnumbered C{! reason}
    (a refused JOIN) are taken.  After it only datagrams that start with the
    secret and a space are: anyone can forge the server's source address,
    but only the server knows the secret, so a forger cannot show the user a
    line, end the session or acknowledge our lines away.

    @ivar problem: why the link gave up, for the user (None while fine).
    """

    def __init__(self, client: ChatClient, clock, address, where: str = "") -> None:
        self.client = client
        self._clock = clock
        self._address = address
        self._where = where or "{}:{}".format(*address)
        self._token: Optional[bytes] = None
        self._session: Optional[bytes] = None
        self._numbered_before_session = False
        self._join_refused = False
        self._retry: Optional[IDelayedCall] = None
        self._deadline: Optional[IDelayedCall] = None
        self._keepalive: Optional[IDelayedCall] = None
        self._quit_timer: Optional[IDelayedCall] = None
        self._last_heard = clock.seconds()
        self._input_paused = False
        self._server_said_bye = False
        self._said_bye = False
        self._stopped = False
        self.problem: Optional[str] = None
        client.link = self
        self.channel = ReliableChannel(
            clock, self._send_in_session, self._line_received, self._gave_up,
            max_payload=UDP_MAX_DATAGRAM - SESSION_PREFIX_LEN,
        )

    @property
    def session(self) -> Optional[bytes]:
        """The session secret the server gave us, or None before SESSION."""
        return self._session

    # Datagrams out

    def startProtocol(self) -> None:
        self.transport.connect(*self._address)
        self._deadline = self._clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_timed_out)
        self._handshake()

    def _send(self, datagram: bytes) -> None:
        if self.transport is None:  # the port is closed; stopProtocol says why
            return
        try:
            self.transport.write(datagram)
        except (OSError, error.ConnectionRefusedError, error.MessageLengthError):
            pass  # a lost datagram (full buffer, no route): retransmission copes

    def _send_in_session(self, datagram: bytes) -> None:
        """Send one datagram of the session: the secret, a space, the frame."""
        if self._session is not None:
            self._send(self._session + b" " + datagram)

    # The handshake

    def _handshake(self) -> None:
        """Send HELLO (until a TOKEN), then JOIN (until SESSION), every HANDSHAKE_INTERVAL."""
        self._retry = None
        if self._session is not None or self._stopped or self.client.done:
            return
        name = self.client.name.encode("utf-8")
        if self._token is None:
            self._send(b"HELLO " + name)
        else:
            self._send(b"JOIN " + self._token + b" " + name)
        if not self._stopped and self._session is None:
            self._retry = self._clock.callLater(HANDSHAKE_INTERVAL, self._handshake)

    def _handshake_timed_out(self) -> None:
        self._deadline = None
        if self._token is None:
            detail = "no TOKEN in answer to HELLO"
        elif self._session is None and self._numbered_before_session:
            detail = "numbered lines but no SESSION: is the server older than this client?"
        elif self._session is None:
            detail = "no SESSION in answer to JOIN"
        else:
            detail = "no welcome line after SESSION"
        self._fail(
            f"no answer from {self._where} (UDP) within {HANDSHAKE_TIMEOUT:g} seconds ({detail})"
        )

    def _joined(self) -> None:
        """The first line came: the handshake is over, keep the server in sight."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._check_alive()

    # Datagrams in

    def datagramReceived(self, datagram: bytes, address) -> None:
        if self._stopped or self.client.done:
            return
        datagram = datagram.rstrip(b"\r\n")
        if self._session is None:
            self._before_session(datagram)
            return
        head, space, rest = datagram.partition(b" ")
        if not space or not hmac.compare_digest(head, self._session):
            return  # not from the server, or not for this session: no sign of life either
        try:
            frame = parse_frame(rest)
        except MalformedFrame:
            return
        self._last_heard = self._clock.seconds()
        if isinstance(frame, ControlFrame):
            self._in_session(frame)
        else:
            first = self.channel.delivered == 0
            self.channel.frame_received(frame)
            if first and self.channel.delivered > 0 and not self._stopped:
                self._joined()

    def _before_session(self, datagram: bytes) -> None:
        """The handshake: TOKEN, SESSION, or a refused JOIN's C{! reason}; nothing else counts."""
        try:
            frame = parse_frame(datagram)
        except MalformedFrame:
            return
        if isinstance(frame, DataFrame):
            # Only a server older than the session secret numbers lines without it; say so if
            # the handshake then times out.  The line itself is not taken.
            self._numbered_before_session = True
            return
        if not isinstance(frame, ControlFrame):
            return
        if frame.verb == "TOKEN" and frame.args and self._token is None:
            self._token = frame.args[0]
            self._cancel(self._retry)
            self._handshake()
        elif frame.verb == "SESSION" and frame.args and self._token is not None:
            if _SESSION.match(frame.args[0]):
                self._session = frame.args[0]
                self._cancel(self._retry)
                self._retry = None
        elif frame.verb == "!" and not self._join_refused:
            # A refused JOIN: stop asking, show it; the client exits 2 or asks for another nick
            # (L{retry_name}).  Answers to JOINs that were on their way are not shown again.
            self._join_refused = True
            self._cancel(self._retry)
            self._cancel(self._deadline)
            self._retry = self._deadline = None
            self.client.server_line("! " + frame.args[0].decode("utf-8", errors="replace"))

    def retry_name(self, name: str) -> None:
        """After a refused JOIN, start the handshake again (bounded as before) as C{name}."""
        if self._stopped or self._session is not None:
            return
        self._join_refused = False
        self._token = None
        self._deadline = self._clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_timed_out)
        self._handshake()

    def _in_session(self, frame: ControlFrame) -> None:
        """A control frame that came with our secret: the server's BYE, PONG or an error."""
        if frame.verb == "BYE":
            self._server_said_bye = True
            self.client.connection_lost()
        elif frame.verb == "!":
            self.client.show("! " + frame.args[0].decode("utf-8", errors="replace"))
        # PONG: hearing it was the point.  TOKEN or a second SESSION: ignored.

    def _line_received(self, line: bytes) -> None:
        self.client.server_line(line.decode("utf-8", errors="replace"))

    # The port closing under us

    def connectionRefused(self) -> None:
        """ICMP port unreachable (on reactors that report it): nobody listens there."""
        self._refused()

    def stopProtocol(self) -> None:
        """
        The port closed.  Unless we closed it, the reactor did: on epoll and
        poll an ICMP "port unreachable" shows as an error event on the
        connected socket, which Twisted treats as the socket's end.
        """
        if not self._stopped:
            self._refused()

    def _refused(self) -> None:
        if self.client.joined or self.channel.delivered:
            self._fail(
                f"lost the server at {self._where} (UDP): nothing listens there any more"
                " (port unreachable)"
            )
        else:
            self._fail(
                f"cannot reach {self._where} (UDP): nothing listens there (port unreachable)"
            )

    # Staying alive, and noticing a server that is gone

    def _check_alive(self) -> None:
        """Ping a quiet server, and give up on one silent for SILENCE_LIMIT."""
        self._keepalive = None
        if self._stopped or self.client.done:
            return
        now = self._clock.seconds()
        silent = now - self._last_heard
        if silent >= SILENCE_LIMIT - _SLACK:
            self.client.show("! server not answering")
            self._fail(
                f"the server at {self._where} stopped answering (UDP): nothing heard for"
                f" {SILENCE_LIMIT:g} seconds"
            )
            return
        if silent >= PING_INTERVAL - _SLACK:
            self._send_in_session(b"PING")
            due = min(now + PROBE_INTERVAL, self._last_heard + SILENCE_LIMIT)
        else:
            due = self._last_heard + PING_INTERVAL
        if not self._stopped:
            self._keepalive = self._clock.callLater(max(0.0, due - now), self._check_alive)

    # Sending lines, and leaving

    def send_line(self, text: str) -> None:
        data = text.encode("utf-8")
        if len(data) > UDP_MAX_LINE:
            self.client.show(f"! message too long for UDP (max {UDP_MAX_LINE} bytes), not sent")
            return
        self.channel.send_line(data)
        if self.channel.outstanding >= UDP_INPUT_PAUSE and not self._input_paused:
            self._input_paused = True
            self.client.pause_input()
            self.channel.drained().addCallback(self._resume_input)

    def _resume_input(self, _) -> None:
        self._input_paused = False
        if not self._stopped:
            self.client.resume_input()

    def quit(self) -> None:
        """Send /quit once our lines are acknowledged; exit on BYE or after a grace."""

        def send_quit(_):
            if self._stopped or self.channel.closed:
                return
            self.channel.send_line(b"/quit")
            self._quit_timer = self._clock.callLater(
                QUIT_GRACE + self.channel.rto * 8, self._quit_grace_over
            )

        self.channel.drained().addCallback(send_quit)

    def _quit_grace_over(self) -> None:
        self._quit_timer = None
        self.client.connection_lost()

    def _gave_up(self, reason: str) -> None:
        self.client.show(f"! server not answering ({reason})")
        self._fail(f"the server at {self._where} stopped answering (UDP): a line {reason}")

    def _fail(self, problem: str) -> None:
        """Give up with exit status 1; the first problem is the one reported."""
        if self.client.done:
            return
        self.problem = problem
        self.client.finish(EXIT_UNREACHABLE)

    def say_bye(self) -> None:
        """
        End our session on the server at once (C{<s> BYE}), so it frees the
        nick now rather than at its timeout.  Once at most; nothing if the
        server ended it already or the port is gone.
        """
        if self._session is None or self._said_bye or self._server_said_bye:
            return
        self._said_bye = True
        self._send_in_session(b"BYE")

    def leave(self) -> None:
        """We are done: say BYE if the session is still open, then stop."""
        self.say_bye()
        self.stop()

    def stop(self) -> None:
        """Cancel every timer and close the channel; the port may close after this."""
        self._stopped = True
        for call in (self._retry, self._deadline, self._keepalive, self._quit_timer):
            self._cancel(call)
        self._retry = self._deadline = self._keepalive = self._quit_timer = None
        self.channel.close()

    @staticmethod
    def _cancel(call: Optional[IDelayedCall]) -> None:
        if call is not None and call.active():
            call.cancel()


@implementer(IHalfCloseableProtocol)
class _Console(LineReceiver):
    """stdin lines to the client; stdout for the server's lines."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def lineReceived(self, line: bytes) -> None:
        self.client.user_line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    def readConnectionLost(self) -> None:
        if self._buffer:
            self.lineReceived(self._buffer)
            self._buffer = b""
        self.client.user_done()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        pass


def _write_out(stream):
    def write(line: str) -> None:
        stream.write(line.encode("utf-8", errors="replace") + b"\n")
        stream.flush()

    return write


def _complain(message: str) -> None:
    sys.stderr.write(f"{PROGRAM}: {message}\n")
    sys.stderr.flush()


class _PipeConsole:
    """stdin and stdout as they are: lines in, lines out (scripts, bots, files)."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def start(self, client: ChatClient) -> None:
        client.console = _Console(client)
        StandardIO(client.console, reactor=self._reactor)

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)


@defer.inlineCallbacks
def run(reactor, argv, interactive: bool = False):
    """
    Parse C{argv}, chat until done; raise SystemExit with the exit code.

    @param interactive: a person at a terminal (L{chatservice.terminal}); the
        reactor must then be Twisted's asyncio reactor.
    """
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{PROGRAM}: {e}\n{options}\n")
        raise SystemExit(EXIT_USAGE)
    finished = defer.Deferred()
    if interactive:
        from chatservice.terminal import TerminalConsole

        console = TerminalConsole(reactor)
        client = ChatClient(options["name"], console.show, finished, reactor, interactive=True)
    else:
        console = _PipeConsole(reactor)
        client = ChatClient(options["name"], _write_out(sys.stdout.buffer), finished, reactor)
    host, port = options["host"], options["port"]
    if options["udp"]:
        code = yield _run_udp(reactor, client, console, finished, host, port)
    else:
        code = yield _run_tcp(reactor, client, console, finished, host, port, options)
    if code != EXIT_OK:
        raise SystemExit(code)


@defer.inlineCallbacks
def _run_udp(reactor, client: ChatClient, console, finished: defer.Deferred, host: str,
             port: int):
    try:
        # Bounded too: a name that does not resolve costs at most HANDSHAKE_TIMEOUT.
        address = yield reactor.resolve(host, timeout=(HANDSHAKE_TIMEOUT,))
    except Exception as e:
        _complain(f"cannot resolve {host}: {e}")
        return EXIT_UNREACHABLE
    link = _UdpLink(client, reactor, (address, port), where=f"{host}:{port}")
    # Ctrl-C or SIGTERM: end the session on the server too, and let the port
    # close without taking it for a vanished server.  leave() is idempotent,
    # so the trigger stays (removing it while shutdown runs it would fail).
    reactor.addSystemEventTrigger("before", "shutdown", link.leave)
    port_handle = reactor.listenUDP(0, link)
    console.start(client)
    code = yield finished
    yield console.stop()
    if code == EXIT_UNREACHABLE:
        _complain(link.problem or f"no answer from {host}:{port} (UDP)")
    link.leave()
    yield port_handle.stopListening()
    return code


@defer.inlineCallbacks
def _run_tcp(reactor, client: ChatClient, console, finished: defer.Deferred, host: str,
             port: int, options: Options):
    endpoint = endpoints.HostnameEndpoint(reactor, host, port)
    if options["tls"]:
        trust = options["trust"] if options["trust"] is not None else ssl.platformTrust()
        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(host, trust), endpoint)
    try:
        link = yield endpoint.connect(Factory.forProtocol(lambda: _TcpLink(client)))
    except Exception as e:
        _complain(f"cannot reach {host}:{port}: {e}")
        return EXIT_UNREACHABLE
    console.start(client)
    code = yield finished
    yield console.stop()
    tls_problem = describe_tls_failure(link.lost_reason, host) if options["tls"] else None
    if tls_problem is not None:
        _complain(f"TLS with {host}:{port} failed: {tls_problem}")
    if link.transport.connected:
        link.transport.loseConnection()
    return code


def main(argv=None) -> None:
    """The console script: C{chatroom-client --name NAME [--host H] [--port P] [--udp | --tls]}."""
    argv = sys.argv[1:] if argv is None else argv
    interactive = _at_terminal() and not _asks_only_for_text(argv)
    if interactive:
        from chatservice import terminal

        terminal.install_reactor()
    task.react(run, [argv, interactive])


def _at_terminal() -> bool:
    """Whether a person is at the keyboard and the screen (stdin and stdout are terminals)."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _asks_only_for_text(argv) -> bool:
    """--help and --version print and exit: no terminal interface for them."""
    return any(arg in ("--help", "-h", "--version") for arg in argv)


if __name__ == "__main__":
    main()
