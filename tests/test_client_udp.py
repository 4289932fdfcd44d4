"""The bundled client's UDP mode, on a task.Clock with no sockets.

L{UdpWireTests} play the server by hand, datagram by datagram, to pin the
client's side of the wire contract (HELLO, TOKEN, JOIN, SESSION, and the
session secret on everything after) and its time bounds.  L{UdpClientTests}
run the client against the real UDP side in memory, through a fake wire
that can lose everything to play an unreachable or vanished server.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    HANDSHAKE_INTERVAL,
    HANDSHAKE_TIMEOUT,
    PING_INTERVAL,
    PROBE_INTERVAL,
    SILENCE_LIMIT,
    UDP_MAX_DATAGRAM,
    UDP_MAX_LINE,
    ChatClient,
    _UdpLink,
)
from chatservice.core.commands import HELP_LINES
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.udp import DatagramChat

CLIENT, SERVER = ("127.0.0.1", 50001), ("127.0.0.1", 12346)
TOKEN = b"0123456789"
SECRET = b"0f1e2d3c4b5a6978"
OTHER_SECRET = b"ffffffffffffffff"
WELCOME = b"1 * you are bot; 1 in #lobby: bot\n"


def signed(frame, secret=SECRET):
    """C{frame} as the server sends it after SESSION: the secret and a space first."""
    return secret + b" " + frame


class FakePort:
    """The client's UDP port: remembers where it is connected and what it sends."""

    def __init__(self):
        self.connected_to = None
        self.sent = []

    def connect(self, host, port):
        self.connected_to = (host, port)

    def write(self, datagram, address=None):
        self.sent.append(datagram)


class _LinkHarness(SynchronousTestCase):
    """A client's UDP link on a clock and a fake port, with the server played by hand."""

    def setUp(self):
        self.clock = Clock()
        self.printed = []
        self.finished = defer.Deferred()
        self.client = ChatClient("bot", self.printed.append, self.finished, self.clock)
        self.link = _UdpLink(self.client, self.clock, SERVER)
        self.port = FakePort()
        self.link.makeConnection(self.port)

    def tearDown(self):
        self.link.stop()


class UdpWireTests(_LinkHarness):
    """The client's side of the UDP contract, against a server played by hand."""

    def tearDown(self):
        super().tearDown()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def server_says(self, *datagrams):
        for datagram in datagrams:
            self.link.datagramReceived(datagram, SERVER)

    def sent_since(self, mark):
        return self.port.sent[mark:]

    def join(self):
        """Run the handshake to the welcome; return how many datagrams were sent by then."""
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION " + SECRET + b"\n", signed(WELCOME))
        self.assertTrue(self.client.joined)
        return len(self.port.sent)

    def test_hello_first_on_a_connected_port(self):
        self.assertEqual(self.port.connected_to, SERVER)
        self.assertEqual(self.port.sent, [b"HELLO bot"])

    def test_hello_repeated_until_token_then_join(self):
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent, [b"HELLO bot", b"HELLO bot"])
        self.server_says(b"TOKEN " + TOKEN + b"\n")
        self.assertEqual(self.port.sent[-1], b"JOIN " + TOKEN + b" bot")
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent[-2:], [b"JOIN " + TOKEN + b" bot"] * 2)

    def test_session_ends_the_join_retries(self):
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION " + SECRET + b"\n")
        mark = len(self.port.sent)
        self.clock.advance(HANDSHAKE_INTERVAL * 4)
        self.assertEqual(self.sent_since(mark), [])
        self.assertEqual(self.link.session, SECRET)

    def test_every_datagram_after_session_starts_with_the_secret(self):
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION " + SECRET + b"\n")
        mark = len(self.port.sent)
        self.server_says(signed(WELCOME), signed(b"2 * type /help for commands\n"))
        self.client.user_line("hello")
        self.server_says(signed(b"ACK 1\n"))
        self.clock.advance(PING_INTERVAL)
        self.link.say_bye()
        self.assertEqual(
            self.sent_since(mark),
            [
                SECRET + b" ACK 1",
                SECRET + b" ACK 2",
                SECRET + b" 1 hello",
                SECRET + b" PING",
                SECRET + b" BYE",
            ],
        )
        self.assertEqual(
            self.printed, ["* you are bot; 1 in #lobby: bot", "* type /help for commands"]
        )

    def test_a_second_session_is_ignored(self):
        mark = self.join()
        self.server_says(b"SESSION " + OTHER_SECRET + b"\n")
        self.client.user_line("still me")
        self.assertEqual(self.sent_since(mark), [SECRET + b" 1 still me"])

    def test_a_malformed_session_is_ignored(self):
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION 0F1E2D3C4B5A6978\n")
        self.server_says(b"SESSION 12345\n")
        self.assertIsNone(self.link.session)
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent[-1], b"JOIN " + TOKEN + b" bot")

    def test_lines_before_session_wait_for_it(self):
        """SESSION lost, welcome came: no ACK without the secret; JOIN again; then all is well."""
        self.server_says(b"TOKEN " + TOKEN + b"\n", signed(WELCOME))
        self.assertEqual(self.printed, [])
        self.assertEqual(self.port.sent, [b"HELLO bot", b"JOIN " + TOKEN + b" bot"])
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent[-1], b"JOIN " + TOKEN + b" bot")
        self.server_says(b"SESSION " + SECRET + b"\n", signed(WELCOME))
        self.assertEqual(self.port.sent[-1], SECRET + b" ACK 1")
        self.assertTrue(self.client.joined)

    def test_refusal_is_shown_and_exits_2_with_nothing_more_sent(self):
        self.server_says(b"TOKEN " + TOKEN + b"\n")
        mark = len(self.port.sent)
        self.server_says(b"! nickname bot is taken, try another\n")
        self.assertEqual(self.successResultOf(self.finished), EXIT_REFUSED)
        self.assertEqual(self.printed, ["! nickname bot is taken, try another"])
        self.clock.advance(HANDSHAKE_TIMEOUT * 2)
        self.link.say_bye()
        self.assertEqual(self.sent_since(mark), [])

    def test_unnumbered_error_after_session_is_shown_not_a_refusal(self):
        self.join()
        self.server_says(signed(b"! malformed datagram\n"))
        self.assertEqual(self.printed[-1], "! malformed datagram")
        self.assertNoResult(self.finished)

    def test_token_after_session_changes_nothing(self):
        mark = self.join()
        self.server_says(b"TOKEN abcdefabcd\n")
        self.clock.advance(HANDSHAKE_INTERVAL * 2)
        self.assertEqual(self.sent_since(mark), [])

    def test_handshake_with_no_answer_gives_up_at_the_timeout(self):
        self.clock.pump([HANDSHAKE_INTERVAL] * (int(HANDSHAKE_TIMEOUT / HANDSHAKE_INTERVAL) - 1))
        self.clock.advance(HANDSHAKE_INTERVAL - 0.01)
        self.assertNoResult(self.finished)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        tries = int(HANDSHAKE_TIMEOUT / HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent, [b"HELLO bot"] * tries)
        self.assertEqual(
            self.link.problem,
            "no answer from 127.0.0.1:12346 (UDP) within 10 seconds (no TOKEN in answer to HELLO)",
        )

    def test_handshake_timeout_counts_until_the_welcome(self):
        """SESSION came but no welcome line: still bounded by HANDSHAKE_TIMEOUT from the start."""
        self.clock.advance(HANDSHAKE_TIMEOUT - 1)
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION " + SECRET + b"\n")
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertIn("no welcome line after SESSION", self.link.problem)
        self.link.say_bye()
        self.assertEqual(self.port.sent[-1], SECRET + b" BYE")

    def test_bye_is_said_once(self):
        mark = self.join()
        self.link.say_bye()
        self.link.say_bye()
        self.assertEqual(self.sent_since(mark), [SECRET + b" BYE"])

    def test_no_bye_after_the_server_said_bye(self):
        mark = self.join()
        self.server_says(signed(b"BYE\n"))
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
        self.link.say_bye()
        self.assertEqual(self.sent_since(mark), [])

    def test_quiet_server_is_pinged_then_given_up_on_at_the_silence_limit(self):
        mark = self.join()
        self.clock.advance(PING_INTERVAL - 0.01)
        self.assertEqual(self.sent_since(mark), [])
        probes = int((SILENCE_LIMIT - PING_INTERVAL) / PROBE_INTERVAL)
        self.clock.pump([0.01] + [PROBE_INTERVAL] * (probes - 1))
        self.clock.advance(PROBE_INTERVAL - 0.01)
        self.assertNoResult(self.finished)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(self.sent_since(mark), [SECRET + b" PING"] * probes)
        self.assertEqual(self.printed[-1], "! server not answering")
        self.assertEqual(
            self.link.problem,
            "the server at 127.0.0.1:12346 stopped answering (UDP): nothing heard for 30 seconds",
        )

    def test_lossy_but_live_server_is_kept(self):
        """A server that answers only every third ping is still there an hour later."""
        self.join()
        pings = 0
        for _ in range(3600):
            before = len(self.port.sent)
            self.clock.advance(1)
            for datagram in self.port.sent[before:]:
                if datagram == SECRET + b" PING":
                    pings += 1
                    if pings % 3 == 0:
                        self.server_says(signed(b"PONG\n"))
        self.assertNoResult(self.finished)
        self.assertGreater(pings, 3600 // 30)

    def test_any_datagram_with_the_secret_counts_as_hearing_the_server(self):
        mark = self.join()
        for _ in range(10):
            self.clock.advance(PING_INTERVAL - 1)
            self.server_says(signed(b"ACK 0\n"))
        self.assertEqual(self.sent_since(mark), [])
        self.assertNoResult(self.finished)

    def test_port_closed_by_the_reactor_before_joining_exits_1(self):
        """On epoll, an ICMP port unreachable closes the port: the protocol is stopped."""
        self.link.doStop()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(
            self.link.problem,
            "cannot reach 127.0.0.1:12346 (UDP): nothing listens there (port unreachable)",
        )
        self.clock.advance(HANDSHAKE_TIMEOUT)  # no timer writes to the closed port
        self.assertEqual(self.port.sent, [b"HELLO bot"])

    def test_port_closed_by_the_reactor_after_joining_exits_1(self):
        self.join()
        self.link.doStop()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(
            self.link.problem,
            "lost the server at 127.0.0.1:12346 (UDP): nothing listens there any more"
            " (port unreachable)",
        )

    def test_connection_refused_exits_1(self):
        """On select, the same ICMP arrives as connectionRefused() and the port stays open."""
        self.link.connectionRefused()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertIn("port unreachable", self.link.problem)

    def test_our_own_stop_is_no_failure(self):
        self.join()
        self.link.stop()
        self.link.doStop()
        self.assertNoResult(self.finished)

    def test_leaving_says_bye_and_the_port_closing_then_is_no_failure(self):
        """Ctrl-C or SIGTERM: the reactor's shutdown calls leave(), then closes every port."""
        mark = self.join()
        self.link.leave()
        self.link.doStop()
        self.assertEqual(self.sent_since(mark), [SECRET + b" BYE"])
        self.assertNoResult(self.finished)

    def test_longest_line_fits_one_datagram(self):
        mark = self.join()
        self.client.user_line("x" * UDP_MAX_LINE)
        [datagram] = self.sent_since(mark)
        self.assertEqual(datagram, SECRET + b" 1 " + b"x" * UDP_MAX_LINE)
        self.assertLessEqual(len(datagram), UDP_MAX_DATAGRAM)

    def test_longer_line_refused_locally(self):
        mark = self.join()
        self.client.user_line("x" * (UDP_MAX_LINE + 1))
        self.assertEqual(self.sent_since(mark), [])
        self.assertEqual(
            self.printed[-1], f"! message too long for UDP (max {UDP_MAX_LINE} bytes), not sent"
        )


#: What an off-path attacker who guessed the client's port would send it, as the server.
FORGERIES = [
    b"2 mallory: send me your password\n",
    b"2+ mallory: send me\n",
    b"BYE\n",
    b"ACK 2000000000\n",
    b"ACK 1\n",
    b"! you are banned\n",
    b"PONG\n",
    b"SESSION " + OTHER_SECRET + b"\n",
    b"TOKEN abcdefabcd\n",
]


class ForgedServerDatagramTests(_LinkHarness):
    """
    After SESSION the client takes only datagrams that start with its secret: one with the
    server's address but without the secret (or with another) changes nothing at all.
    """

    def setUp(self):
        super().setUp()
        self.link.datagramReceived(b"TOKEN " + TOKEN + b"\n", SERVER)
        self.link.datagramReceived(b"SESSION " + SECRET + b"\n", SERVER)
        self.link.datagramReceived(signed(WELCOME), SERVER)
        self.client.user_line("my pending line")
        self.mark = len(self.port.sent)

    def forge(self, secret=None):
        for datagram in FORGERIES:
            self.link.datagramReceived(
                datagram if secret is None else signed(datagram, secret), SERVER
            )

    def assert_unmoved(self):
        """Nothing shown, no exit, no ACK sent, our line still pending and retransmitted."""
        self.assertEqual(self.printed, ["* you are bot; 1 in #lobby: bot"])
        self.assertNoResult(self.finished)
        self.assertEqual(self.port.sent[self.mark:], [])
        self.assertEqual(self.link.channel.outstanding, 1)
        self.assertEqual(self.link.session, SECRET)
        self.clock.advance(1)
        self.assertIn(SECRET + b" 1 my pending line", self.port.sent[self.mark:])
        self.link.say_bye()  # the session is still ours to end
        self.assertEqual(self.port.sent[-1], SECRET + b" BYE")

    def test_without_the_secret_nothing_happens(self):
        self.forge()
        self.assert_unmoved()

    def test_with_another_secret_nothing_happens(self):
        self.forge(OTHER_SECRET)
        self.forge(SECRET[:-1])
        self.forge(SECRET.upper())
        self.assert_unmoved()

    def test_a_forged_line_is_not_shown(self):
        self.link.datagramReceived(b"2 mallory: send me your password\n", SERVER)
        self.assertNotIn("mallory: send me your password", self.printed)
        self.assertEqual(self.port.sent[self.mark:], [])

    def test_a_forged_bye_does_not_end_the_session(self):
        self.link.datagramReceived(b"BYE\n", SERVER)
        self.assertNoResult(self.finished)
        self.link.say_bye()
        self.assertEqual(self.port.sent[self.mark:], [SECRET + b" BYE"])

    def test_a_forged_ack_does_not_acknowledge_our_lines(self):
        self.link.datagramReceived(b"ACK 2000000000\n", SERVER)
        self.link.datagramReceived(b"ACK 1\n", SERVER)
        self.assertEqual(self.link.channel.outstanding, 1)

    def test_forgeries_are_no_sign_of_life(self):
        """A silent server is given up on even while a forger keeps sending as it."""
        for _ in range(int(SILENCE_LIMIT)):
            self.clock.advance(1)
            self.forge()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)

    def test_with_the_secret_the_server_is_heard(self):
        self.link.datagramReceived(signed(b"ACK 1\n"), SERVER)
        self.assertEqual(self.link.channel.outstanding, 0)
        self.link.datagramReceived(signed(b"2 bob: hi\n"), SERVER)
        self.assertEqual(self.printed[-1], "bob: hi")
        self.assertEqual(self.port.sent[-1], SECRET + b" ACK 2")
        self.link.datagramReceived(signed(b"! malformed datagram\n"), SERVER)
        self.assertEqual(self.printed[-1], "! malformed datagram")
        self.assertNoResult(self.finished)
        self.link.datagramReceived(signed(b"BYE\n"), SERVER)
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
        self.link.say_bye()
        self.assertEqual(self.port.sent[-1], SECRET + b" ACK 2")  # no BYE after the server's

    def test_the_secret_alone_or_with_garbage_is_dropped(self):
        for datagram in [SECRET, SECRET + b"\n", SECRET + b" ", SECRET + b" garbage",
                         SECRET + b"  1 x", b" " + SECRET + b" 2 x"]:
            self.link.datagramReceived(datagram, SERVER)
        self.assert_unmoved()


class HandshakeForgeryTests(_LinkHarness):
    """Before SESSION only TOKEN, SESSION and a refusal's C{! reason} count."""

    def test_nothing_else_before_session(self):
        self.link.datagramReceived(b"TOKEN " + TOKEN + b"\n", SERVER)
        for datagram in [b"BYE\n", b"PONG\n", b"ACK 5\n", WELCOME, signed(b"BYE\n")]:
            self.link.datagramReceived(datagram, SERVER)
        self.assertNoResult(self.finished)
        self.assertEqual(self.printed, [])
        self.link.datagramReceived(b"SESSION " + SECRET + b"\n", SERVER)
        self.link.datagramReceived(signed(WELCOME), SERVER)
        self.assertTrue(self.client.joined)

    def test_a_second_session_changes_no_secret(self):
        """A forged SESSION after the real one: the real secret still rules both ways."""
        self.link.datagramReceived(b"TOKEN " + TOKEN + b"\n", SERVER)
        self.link.datagramReceived(b"SESSION " + SECRET + b"\n", SERVER)
        self.link.datagramReceived(b"SESSION " + OTHER_SECRET + b"\n", SERVER)
        self.link.datagramReceived(signed(WELCOME, OTHER_SECRET), SERVER)
        self.assertEqual(self.printed, [])
        self.link.datagramReceived(signed(WELCOME), SERVER)
        self.assertEqual(self.printed, ["* you are bot; 1 in #lobby: bot"])
        self.assertEqual(self.link.session, SECRET)


class Wire:
    """Carries datagrams between the client link and the server, on the clock."""

    def __init__(self, clock, chat, link):
        self.clock, self.chat, self.link = clock, chat, link
        self.up = True
        self.to_server = []
        self.to_client = []

    # the client's transport
    def connect(self, host, port):
        pass

    def write(self, datagram, address=None):
        if address is None:  # client -> server
            self.to_server.append(datagram)
            if self.up:
                self.clock.callLater(0.001, self.chat.datagramReceived, datagram, CLIENT)
        else:  # server -> client
            self.to_client.append(datagram)
            if self.up:
                self.clock.callLater(0.001, self.link.datagramReceived, datagram, SERVER)


class UdpClientTests(SynchronousTestCase):
    """The client against the real UDP side, in memory."""

    def setUp(self):
        self.clock = Clock()
        self.hub = Hub(self.clock)
        self.registry = NickRegistry()
        limits = Limits(flood=FloodPolicy(rate=0))
        self.chat = DatagramChat(self.hub, self.registry, self.clock, Admission(0, 0), limits)

    def start(self, name="uma", up=True):
        self.printed = []
        self.finished = defer.Deferred()
        self.client = ChatClient(name, self.printed.append, self.finished, self.clock)
        self.link = _UdpLink(self.client, self.clock, SERVER)
        self.wire = Wire(self.clock, self.chat, self.link)
        self.wire.up = up
        self.chat.makeConnection(self.wire)
        self.link.makeConnection(self.wire)
        self.advance(1)

    def advance(self, seconds, step=0.01):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def online(self):
        """The nicks in the default room, where every user lands: who is online."""
        return [nick for nick, _ in self.hub.who(self.hub.default_room)]

    def test_handshake_and_chat(self):
        self.start()
        self.assertTrue(self.client.joined)
        self.assertEqual(self.printed[0], "* you are uma; 1 in #lobby: uma")
        self.client.user_line("hello")
        self.advance(0.5)
        self.assertEqual(self.link.channel.outstanding, 0)

    def test_session_secret_on_everything_after_join(self):
        self.start()
        secret = self.link.session
        self.assertRegex(secret, rb"\A[0-9a-f]{16}\Z")
        mark = len(self.wire.to_server)
        self.client.user_line("hello")
        self.advance(PING_INTERVAL * 2, step=0.5)
        after = self.wire.to_server[mark:]
        self.assertIn(secret + b" 1 hello", after)
        self.assertIn(secret + b" PING", after)
        self.assertTrue(all(d.startswith(secret + b" ") for d in after), after)

    def test_every_server_datagram_after_session_carries_the_secret(self):
        """What the real server sends the client, from SESSION on, starts with the secret."""
        self.start()
        self.client.user_line("hello")
        self.chat.datagramReceived(self.link.session + b" not a frame", CLIENT)
        self.advance(PING_INTERVAL * 2, step=0.5)
        self.client.user_done()
        self.advance(1)
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
        secret = self.link.session
        session = self.wire.to_client.index(b"SESSION " + secret + b"\n")
        after = self.wire.to_client[session + 1:]
        self.assertIn(secret + b" PONG\n", after)
        self.assertIn(secret + b" ! malformed datagram (see docs/udp-protocol.md)\n", after)
        self.assertEqual(after[-1], secret + b" BYE\n")
        self.assertTrue(all(d.startswith(secret + b" ") for d in after), after)

    def test_forgery_from_the_servers_address_changes_nothing(self):
        """The real server, and a forger using its address without the secret."""
        self.start()
        self.wire.up = False  # hold our line unacknowledged
        self.client.user_line("pending")
        self.advance(0.1)
        self.wire.up = True
        before = list(self.printed)
        for datagram in FORGERIES:
            self.link.datagramReceived(datagram, SERVER)
        self.assertEqual(self.printed, before)
        self.assertNoResult(self.finished)
        self.assertEqual(self.link.channel.outstanding, 1)
        self.advance(1)  # retransmitted, delivered, acknowledged by the real server
        self.assertEqual(self.link.channel.outstanding, 0)
        self.client.user_done()
        self.advance(1)
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
        self.assertEqual(self.printed[-1], "* goodbye")
        self.assertEqual(self.online(), [])

    def test_eof_quits_once_acknowledged_and_exits_0(self):
        self.start()
        self.client.user_line("bye now")
        self.client.user_done()
        self.advance(1)
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
        self.assertEqual(self.printed[-1], "* goodbye")
        self.assertIsNone(self.registry.holder("uma"))

    def test_taken_nick_exits_2(self):
        self.registry.reserve("uma", object())
        self.start()
        self.assertEqual(self.successResultOf(self.finished), EXIT_REFUSED)
        self.assertEqual(self.printed, ["! nickname uma is taken, try another"])
        self.assertIsNone(self.link.session)

    def test_bye_from_the_client_frees_the_nick_at_once(self):
        self.start()
        self.link.say_bye()
        self.advance(0.1)
        self.assertEqual(self.online(), [])
        self.assertIsNone(self.registry.holder("uma"))

    def test_unreachable_server_exits_1_at_the_handshake_timeout(self):
        self.start(up=False)
        self.advance(HANDSHAKE_TIMEOUT - 1 - 0.05)
        self.assertNoResult(self.finished)
        self.advance(0.1)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        hellos = [d for d in self.wire.to_server if d.startswith(b"HELLO")]
        self.assertEqual(len(hellos), HANDSHAKE_TIMEOUT / HANDSHAKE_INTERVAL)
        self.link.stop()
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])

    def test_idle_client_pings_and_is_never_expired(self):
        self.start()
        self.advance(PING_INTERVAL * 6, step=0.5)
        self.assertIn(self.link.session + b" PING", self.wire.to_server)
        self.assertEqual(self.online(), ["uma"])
        self.assertNoResult(self.finished)

    def test_vanished_server_noticed_within_the_silence_limit(self):
        self.start()
        self.wire.up = False
        self.advance(SILENCE_LIMIT, step=0.5)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(self.printed[-1], "! server not answering")

    def test_shutdown_notice_then_bye_ends_with_0(self):
        self.start()
        self.hub.close_all("server shutting down")
        self.advance(1)
        self.assertEqual(self.printed[-1], "* server shutting down")
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)

    def test_a_multi_line_reply_is_printed_line_by_line(self):
        """C{/help} comes as one numbered line per text line; the client prints each."""
        self.start()
        self.client.user_line("/help")
        self.advance(0.5)
        self.assertEqual(self.printed[2:], ["* " + line for line in HELP_LINES])

    def test_longest_line_is_taken_by_the_server(self):
        self.start()
        self.client.user_line("x" * UDP_MAX_LINE)
        self.advance(1)
        self.assertEqual(self.link.channel.outstanding, 0)
        self.assertEqual(
            self.printed, ["* you are uma; 1 in #lobby: uma", "* type /help for commands"]
        )
