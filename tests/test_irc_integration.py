"""
Integration: the real service (from C{tap.makeService}) with IRC and TCP on
127.0.0.1 port 0, driven by Twisted's own L{irc.IRCClient} and raw TCP line users.

Nothing sleeps: every wait is on an event (a line, a callback, a close),
bounded by L{support.WAIT}; every connection and port is closed in cleanup.
"""

from twisted.internet import defer, endpoints
from twisted.trial.unittest import TestCase
from twisted.words.protocols import irc

from chatservice import tap
from chatservice.frontends.irc import IRCChatFactory
from tests import support

SERVER = "irc.test"
SHUTDOWN_ERROR = "ERROR :Closing Link: 127.0.0.1 (server shutting down)"


class Client(irc.IRCClient):
    """
    An IRCClient that records every line it reads and every callback it gets,
    as C{events} (tuples, in order), and fires waiters on them.
    """

    heartbeatInterval = None  # no timer left behind

    def __init__(self, clock, nickname: str, password: str | None = None) -> None:
        self.clock = clock
        self.nickname = nickname
        self.password = password
        self.events: list[tuple] = []
        self._read = 0
        self._waiters = support.Waiters(clock)
        self.closed = False
        self.lines_at_close = None

    def _add(self, *event) -> None:
        self.events.append(event)
        self._waiters.changed()

    def _find(self, match):
        for index in range(self._read, len(self.events)):
            if match(self.events[index]):
                got = self.events[self._read:index + 1]
                self._read = index + 1
                return got
        return None

    def until(self, match, timeout: float = support.WAIT) -> defer.Deferred:
        """Fire with the unread events up to the first one C{match} accepts (a list)."""
        return self._waiters.wait(lambda: self._find(match), timeout,
                                  lambda: f"unread: {self.events[self._read:]!r}")

    def expect(self, *event) -> defer.Deferred:
        """Wait for the event C{event} exactly; fire with it."""
        return self.until(lambda e: e == event).addCallback(lambda got: got[-1])

    def line(self, text: str) -> defer.Deferred:
        """Wait for the raw line C{text} from the server."""
        return self.expect("line", text)

    @property
    def lines(self) -> list:
        return [event[1] for event in self.events if event[0] == "line"]

    # -- IRCClient --------------------------------------------------------

    def lineReceived(self, line):
        self._add("line", line.decode("utf-8") if isinstance(line, bytes) else line)
        super().lineReceived(line)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed = True
        self.lines_at_close = list(self.lines)
        self._add("closed")

    def signedOn(self):
        self._add("signedOn", self.nickname)

    def joined(self, channel):
        self._add("joined", channel)

    def userJoined(self, user, channel):
        self._add("userJoined", user, channel)

    def privmsg(self, user, channel, message):
        self._add("privmsg", user, channel, message)

    def noticed(self, user, channel, message):
        self._add("noticed", user, channel, message)

    def action(self, user, channel, data):
        self._add("action", user, channel, data)

    def nickChanged(self, nick):
        super().nickChanged(nick)
        self._add("nickChanged", nick)

    def userRenamed(self, oldname, newname):
        self._add("userRenamed", oldname, newname)

    def userQuit(self, user, quitMessage):
        self._add("userQuit", user, quitMessage)

    def close(self) -> defer.Deferred:
        """Hang up if still connected; fire once closed."""
        if not self.closed:
            self.transport.loseConnection()
        return self.expect("closed") if not self.closed else defer.succeed(None)


class _IRCHarness(TestCase):
    """The real service with TCP and IRC on loopback; IRC clients and line users for it."""

    timeout = 60
    extra_options: tuple = ()

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        options = tap.Options()
        options.parseOptions([
            "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off",
            "--irc", "tcp:0:interface=127.0.0.1", "--web", "off", "--history", "none",
            "--server-name", SERVER, *self.extra_options,
        ])
        recorder = support.ListenRecorder(reactor)
        self.service = tap.makeService(options, reactor=recorder)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = {isinstance(port.factory, IRCChatFactory): port.getHost().port
                 for port in recorder.tcp_ports}
        self.irc_port, self.tcp_port = ports[True], ports[False]

    @defer.inlineCallbacks
    def connect(self, nickname, password=None):
        """An IRCClient connected as C{nickname}, not waited on."""
        client = Client(self.reactor, nickname, password)
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.irc_port)
        yield endpoints.connectProtocol(endpoint, client).addTimeout(support.WAIT, self.reactor)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def sign_on(self, nickname, *channels, password=None):
        """An IRCClient signed on as C{nickname} and in C{channels}."""
        client = yield self.connect(nickname, password)
        yield client.expect("signedOn", nickname)
        for channel in channels:
            client.join(channel)
            yield client.expect("joined", channel)
            yield client.line(f":{SERVER} 366 {nickname} {channel} :End of /NAMES list.")
        return client

    def line_user(self, nick):
        """A raw TCP line user, logged in as C{nick} (in #lobby)."""
        return support.line_user(self, self.reactor, self.tcp_port, nick)


class IRCClientTests(_IRCHarness):
    """Twisted's IRCClient against the real service."""

    @defer.inlineCallbacks
    def test_registration_without_cap(self):
        """NICK/USER (and PASS) register: 001, and 005 as IRCClient parses it."""
        alice = yield self.connect("alice", password="secret")
        yield alice.expect("signedOn", "alice")
        self.assertEqual(alice.lines[0],
                         f":{SERVER} 001 alice :Welcome to the chatroom IRC network, alice")
        yield alice.line(f":{SERVER} 422 alice :MOTD File is missing")
        self.assertEqual(alice.supported.getFeature("CASEMAPPING"), ("ascii",))
        self.assertEqual(alice.supported.getFeature("NICKLEN"), 32)
        self.assertEqual(alice.supported.getFeature("CHANTYPES"), ("#",))

    @defer.inlineCallbacks
    def test_join_and_privmsg_between_clients(self):
        """Two IRCClients: a room line, a private line and an action reach the other."""
        alice = yield self.sign_on("alice", "#chat")
        bob = yield self.sign_on("bob", "#chat")
        yield alice.expect("userJoined", "bob", "#chat")
        alice.msg("#chat", "hello bob")
        yield bob.expect("privmsg", f"alice!chat@{SERVER}", "#chat", "hello bob")
        bob.msg("alice", "hi alice")
        yield alice.expect("privmsg", f"bob!chat@{SERVER}", "alice", "hi alice")
        bob.describe("#chat", "waves")
        yield alice.expect("action", f"bob!chat@{SERVER}", "#chat", "waves")

    @defer.inlineCallbacks
    def test_irc_client_and_line_user(self):
        """A line user in #lobby and an IRCClient there talk both ways."""
        carol = yield self.line_user("carol")
        alice = yield self.sign_on("alice", "#lobby")
        self.assertEqual((yield carol.next_line()), "* alice joined")
        carol.send(b"hello irc\r\n")
        yield alice.expect("privmsg", f"carol!chat@{SERVER}", "#lobby", "hello irc")
        alice.msg("#lobby", "hello line")
        self.assertEqual((yield carol.next_line()), "alice: hello line")
        alice.describe("#lobby", "dances")
        self.assertEqual((yield carol.next_line()), "* alice dances")

    @defer.inlineCallbacks
    def test_nick_change(self):
        """setNick: the client and the room see the change; messages reach the new nick."""
        alice = yield self.sign_on("alice", "#chat")
        bob = yield self.sign_on("bob", "#chat")
        alice.setNick("alicia")
        yield alice.expect("nickChanged", "alicia")
        yield bob.expect("userRenamed", "alice", "alicia")
        bob.msg("alicia", "new name?")
        yield alice.expect("privmsg", f"bob!chat@{SERVER}", "alicia", "new name?")

    @defer.inlineCallbacks
    def test_nick_in_use_retried(self):
        """A taken nick: 433, IRCClient retries with alice_ and signs on."""
        yield self.sign_on("alice")
        second = yield self.connect("alice")
        yield second.until(lambda e: e[0] == "line" and e[1].split(" ")[1:2] == ["433"])
        yield second.expect("signedOn", "alice_")

    @defer.inlineCallbacks
    def test_quit(self):
        """QUIT: the room sees QUIT with the reason; the quitter gets ERROR, then the close."""
        alice = yield self.sign_on("alice", "#chat")
        bob = yield self.sign_on("bob", "#chat")
        alice.quit("bye")
        yield bob.expect("userQuit", "alice", "Quit: bye")
        yield alice.expect("closed")
        self.assertTrue(alice.lines_at_close[-1].startswith("ERROR :Closing Link: 127.0.0.1 ("),
                        alice.lines_at_close[-1:])

    @defer.inlineCallbacks
    def test_too_long_line_417(self):
        """A line over 512 bytes: 417, not relayed; the connection stays usable."""
        alice = yield self.sign_on("alice", "#chat")
        bob = yield self.sign_on("bob", "#chat")
        alice.sendLine("PRIVMSG #chat :" + "x" * 600)
        alice.sendLine("PING :still-here")
        yield alice.line(f":{SERVER} 417 alice :Input line was too long")
        yield alice.line(f":{SERVER} PONG {SERVER} :still-here")
        alice.msg("#chat", "short one")
        got = yield bob.until(lambda e: e[0] == "privmsg")
        self.assertEqual(got[-1], ("privmsg", f"alice!chat@{SERVER}", "#chat", "short one"))

    @defer.inlineCallbacks
    def test_shutdown_says_error_before_close(self):
        """Stopping the service: ERROR ... (server shutting down) arrives, then the close."""
        alice = yield self.sign_on("alice", "#chat")
        yield self.service.stopService()
        yield alice.expect("closed")
        self.assertEqual(alice.lines_at_close[-1], SHUTDOWN_ERROR)


class FloodTests(_IRCHarness):
    """With --flood-rate, an IRC client's burst is slowed, never lost."""

    extra_options = ("--flood-rate", "20", "--flood-burst", "2")

    @defer.inlineCallbacks
    def test_burst_slowed_not_lost(self):
        """Twelve lines at once: all arrive in order, over at least (12-2)/20 s; sender told."""
        alice = yield self.sign_on("alice", "#chat")
        bob = yield self.sign_on("bob", "#chat")
        start = self.reactor.seconds()
        for i in range(12):
            alice.msg("#chat", f"line {i}")
        got = []
        while len(got) < 12:
            events = yield bob.until(lambda e: e[0] == "privmsg")
            got.append(events[-1][3])
        elapsed = self.reactor.seconds() - start
        self.assertEqual(got, [f"line {i}" for i in range(12)])
        self.assertGreaterEqual(elapsed, 0.45)
        notice = yield alice.until(lambda e: e[0] == "noticed")
        self.assertTrue(notice[-1][3].startswith("slow down: you may send 20 lines per second"),
                        notice[-1])
