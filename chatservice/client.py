# -*- test-case-name: tests.test_client -*-
"""chatroom-client: a terminal or pipe user of the chat, over TCP or UDP.

It prints every server line as it arrives and sends each stdin line; at
stdin EOF it sends C{/quit} once its lines are out, and exits 0.  A refused
nick exits 2, an unreachable server 1.  Built on Twisted: StandardIO for the
console, an endpoint for TCP, L{chatservice.reliable} for UDP.
"""

import sys

from twisted.internet import defer, endpoints, error, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.stdio import StandardIO
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from zope.interface import implementer

from chatservice.reliable import (
    ControlFrame,
    MalformedFrame,
    ReliableChannel,
    parse_frame,
)

EXIT_OK, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2, 64
#: The server's welcome line starts so; before it, a "! " line is a refusal.
WELCOME_PREFIX = "* you are "
GREETING_PREFIX = "* welcome to chatroom"
#: UDP: how often to resend HELLO/JOIN, and how many times, before giving up.
HANDSHAKE_INTERVAL = 0.5
HANDSHAKE_TRIES = 10
#: UDP: ping after this many idle seconds; give up after this many unanswered.
PING_INTERVAL = 15.0
PINGS_UNANSWERED = 4
#: After /quit, wait at most this long for the server's goodbye.
QUIT_GRACE = 3.0
#: The longest line the UDP side takes in one datagram (with its seq header).
UDP_MAX_DATAGRAM = 1200
#: UDP: stop reading stdin while this many of our lines are unacknowledged.
UDP_INPUT_PAUSE = 512


class Options(usage.Options):
    """chatroom-client's command line."""

    synopsis = "--name NAME [--host HOST] [--port PORT] [--udp]"
    optFlags = [["udp", "u", "Speak the UDP protocol (default port 12346)."]]
    optParameters = [
        ["name", "n", None, "Nickname to join with (required)."],
        ["host", None, "127.0.0.1", "Server host name or address."],
        ["port", "p", None, "Server port (default 12345, or 12346 with --udp).", int],
    ]

    def postOptions(self) -> None:
        if not self["name"]:
            raise usage.UsageError("--name is required")
        if self["port"] is None:
            self["port"] = 12346 if self["udp"] else 12345


class ChatClient:
    """
    The client's rules, whatever carries the bytes.

    @param write_out: prints one server line for the user.
    @param finished: fires with the exit code.
    """

    def __init__(self, name: str, write_out, finished: defer.Deferred, clock) -> None:
        self.name = name
        self._write_out = write_out
        self._finished = finished
        self._clock = clock
        self.joined = False
        self._quitting = False
        self._eof = False
        self._queued: list[str] = []
        self.link = None  # set by the transport: send_line(str), quit()
        self.console = None  # set once stdin is open: pause and resume it

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
            self.finish(EXIT_REFUSED)

    def user_line(self, text: str) -> None:
        """One line typed (or piped) by the user."""
        if self._quitting:
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
    def quitting(self) -> bool:
        """Whether C{/quit} is on its way (no more keepalives needed)."""
        return self._quitting

    def pause_input(self) -> None:
        """Stop reading stdin for a while (the link is full)."""
        if self.console is not None:
            self.console.transport.pauseProducing()

    def resume_input(self) -> None:
        """Read stdin again."""
        if self.console is not None:
            self.console.transport.resumeProducing()

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
        self.finish(EXIT_OK if self.joined else EXIT_UNREACHABLE)


class _TcpLink(LineReceiver):
    """The TCP connection to the server."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        client.link = self

    def lineReceived(self, line: bytes) -> None:
        self.client.server_line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def send_line(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def quit(self) -> None:
        self.sendLine(b"/quit")

    def connectionLost(self, reason) -> None:
        self.client.connection_lost()


class _UdpLink(DatagramProtocol):
    """The UDP protocol's client end: handshake, a reliable channel, keepalive."""

    def __init__(self, client: ChatClient, clock, address) -> None:
        self.client = client
        self._clock = clock
        self._address = address
        self._token = None
        self._tries = 0
        self._timer = None
        self._last_heard = clock.seconds()
        self._input_paused = False
        client.link = self
        self.channel = ReliableChannel(
            clock, self._send, self._line_received, self._gave_up,
            max_payload=UDP_MAX_DATAGRAM - 1,
        )

    def startProtocol(self) -> None:
        self.transport.connect(*self._address)
        self._handshake()

    def _send(self, datagram: bytes) -> None:
        try:
            self.transport.write(datagram)
        except (OSError, error.ConnectionRefusedError, error.MessageLengthError):
            pass  # a lost datagram (ICMP refusal, full buffer): retransmission copes

    def _schedule(self, delay: float, call) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(delay, call)

    def _handshake(self) -> None:
        """Send HELLO (until a TOKEN), then JOIN (until the first line); bounded tries."""
        if self.client.joined or self._first_line_seen():
            return
        self._tries += 1
        if self._tries > HANDSHAKE_TRIES:
            self.client.finish(EXIT_UNREACHABLE)
            return
        if self._token is None:
            self._send(b"HELLO " + self.client.name.encode("utf-8"))
        else:
            self._send(b"JOIN " + self._token + b" " + self.client.name.encode("utf-8"))
        self._schedule(HANDSHAKE_INTERVAL, self._handshake)

    def _first_line_seen(self) -> bool:
        return self.channel.delivered > 0

    def datagramReceived(self, datagram: bytes, address) -> None:
        self._last_heard = self._clock.seconds()
        try:
            frame = parse_frame(datagram.rstrip(b"\r\n"))
        except MalformedFrame:
            return
        if isinstance(frame, ControlFrame):
            self._control(frame)
        else:
            self.channel.frame_received(frame)

    def _control(self, frame: ControlFrame) -> None:
        if frame.verb == "TOKEN" and frame.args and self._token is None:
            self._token = frame.args[0]
            self._tries = 0
            self._handshake()
        elif frame.verb == "BYE":
            self.client.connection_lost()
        elif frame.verb == "!":
            text = b" ".join(frame.args).decode("utf-8", errors="replace")
            self.client.server_line("! " + text)

    def connectionRefused(self) -> None:
        """ICMP port unreachable: nobody listens there (yet); retries go on."""

    def _line_received(self, line: bytes) -> None:
        if not self.client.joined and self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.client.server_line(line.decode("utf-8", errors="replace"))
        if self.client.joined and not self.client.quitting:
            self._schedule(PING_INTERVAL, self._ping)

    def _ping(self) -> None:
        """Keep the server from expiring us; notice a server that is gone."""
        silent = self._clock.seconds() - self._last_heard
        if silent > PING_INTERVAL * PINGS_UNANSWERED:
            self.client.server_line("! server not answering")
            self.client.finish(EXIT_UNREACHABLE)
            return
        self._send(b"PING")
        self._schedule(PING_INTERVAL, self._ping)

    def send_line(self, text: str) -> None:
        data = text.encode("utf-8")
        if len(data) + 12 > UDP_MAX_DATAGRAM:
            self.client.server_line(
                f"! message too long for UDP (max about {UDP_MAX_DATAGRAM - 12} bytes), not sent"
            )
            return
        self.channel.send_line(data)
        if self.channel.outstanding >= UDP_INPUT_PAUSE and not self._input_paused:
            self._input_paused = True
            self.client.pause_input()
            self.channel.drained().addCallback(self._resume_input)

    def _resume_input(self, _) -> None:
        self._input_paused = False
        self.client.resume_input()

    def quit(self) -> None:
        """Send /quit once our lines are acknowledged; exit on BYE or after a grace."""
        d = self.channel.drained()

        def send_quit(_):
            self.channel.send_line(b"/quit")
            self._schedule(QUIT_GRACE + self.channel.rto * 8, self.client.connection_lost)

        d.addCallback(send_quit)

    def _gave_up(self, reason: str) -> None:
        self.client.server_line(f"! server not answering ({reason})")
        self.client.finish(EXIT_UNREACHABLE)

    def stop(self) -> None:
        """Cancel every timer."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.channel.close()


@implementer(IHalfCloseableProtocol)
class _Console(LineReceiver):
    """stdin lines to the client; stdout for the server's lines."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def lineReceived(self, line: bytes) -> None:
        self.client.user_line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

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


@defer.inlineCallbacks
def run(reactor, argv):
    """Parse C{argv}, chat until done; raise SystemExit with the exit code."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"chatroom-client: {e}\n{options}\n")
        raise SystemExit(EXIT_USAGE)
    finished = defer.Deferred()
    client = ChatClient(options["name"], _write_out(sys.stdout.buffer), finished, reactor)
    host, port = options["host"], options["port"]
    link = None
    if options["udp"]:
        try:
            address = yield reactor.resolve(host)
        except Exception as e:
            sys.stderr.write(f"chatroom-client: cannot resolve {host}: {e}\n")
            raise SystemExit(EXIT_UNREACHABLE)
        link = _UdpLink(client, reactor, (address, port))
        port_handle = reactor.listenUDP(0, link)
    else:
        endpoint = endpoints.HostnameEndpoint(reactor, host, port)
        try:
            link = yield endpoint.connect(Factory.forProtocol(lambda: _TcpLink(client)))
        except Exception as e:
            sys.stderr.write(f"chatroom-client: cannot reach {host}:{port}: {e}\n")
            raise SystemExit(EXIT_UNREACHABLE)
    client.console = _Console(client)
    StandardIO(client.console, reactor=reactor)
    code = yield finished
    if options["udp"]:
        if code == EXIT_REFUSED:
            link.send_line("/quit")  # once, unacknowledged: frees our place at once
        if code == EXIT_UNREACHABLE:
            sys.stderr.write(f"chatroom-client: no answer from {host}:{port} (UDP)\n")
        link.stop()
        yield port_handle.stopListening()
    elif link.transport.connected:
        link.transport.loseConnection()
    if code != EXIT_OK:
        raise SystemExit(code)


def main(argv=None) -> None:
    """The console script: C{chatroom-client --name NAME [--host H] [--port P] [--udp]}."""
    task.react(run, [sys.argv[1:] if argv is None else argv])


if __name__ == "__main__":
    main()
