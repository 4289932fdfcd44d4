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
from chatservice.flood import FloodPolicy
from chatservice.limits import Admission, Limits
from chatservice.nicks import NickRegistry
from chatservice.room import Room
from chatservice.udp import DatagramChat

CLIENT, SERVER = ("127.0.0.1", 50001), ("127.0.0.1", 12346)
TOKEN = b"0123456789"
SECRET = b"0f1e2d3c4b5a6978"
OTHER_SECRET = b"ffffffffffffffff"
WELCOME = b"1 * you are bot; 1 online: bot\n"


class FakePort:
    """The client's UDP port: remembers where it is connected and what it sends."""

    def __init__(self):
        self.connected_to = None
        self.sent = []

    def connect(self, host, port):
        self.connected_to = (host, port)

    def write(self, datagram, address=None):
        self.sent.append(datagram)


class UdpWireTests(SynchronousTestCase):
    """The client's side of the UDP contract, against a server played by hand."""

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
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def server_says(self, *datagrams):
        for datagram in datagrams:
            self.link.datagramReceived(datagram, SERVER)

    def sent_since(self, mark):
        return self.port.sent[mark:]

    def join(self):
        """Run the handshake to the welcome; return how many datagrams were sent by then."""
        self.server_says(b"TOKEN " + TOKEN + b"\n", b"SESSION " + SECRET + b"\n", WELCOME)
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
        self.server_says(WELCOME, b"2 * type /help for commands\n")
        self.client.user_line("hello")
        self.server_says(b"ACK 1\n")
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
            self.printed, ["* you are bot; 1 online: bot", "* type /help for commands"]
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
        self.server_says(b"TOKEN " + TOKEN + b"\n", WELCOME)
        self.assertEqual(self.printed, [])
        self.assertEqual(self.port.sent, [b"HELLO bot", b"JOIN " + TOKEN + b" bot"])
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent[-1], b"JOIN " + TOKEN + b" bot")
        self.server_says(b"SESSION " + SECRET + b"\n", WELCOME)
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
        self.server_says(b"! malformed datagram\n")
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
        self.server_says(b"BYE\n")
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
                        self.server_says(b"PONG\n")
        self.assertNoResult(self.finished)
        self.assertGreater(pings, 3600 // 30)

    def test_any_datagram_counts_as_hearing_the_server(self):
        mark = self.join()
        for _ in range(10):
            self.clock.advance(PING_INTERVAL - 1)
            self.server_says(b"ACK 0\n")
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


class Wire:
    """Carries datagrams between the client link and the server, on the clock."""

    def __init__(self, clock, chat, link):
        self.clock, self.chat, self.link = clock, chat, link
        self.up = True
        self.to_server = []

    # the client's transport
    def connect(self, host, port):
        pass

    def write(self, datagram, address=None):
        if address is None:  # client -> server
            self.to_server.append(datagram)
            if self.up:
                self.clock.callLater(0.001, self.chat.datagramReceived, datagram, CLIENT)
        elif self.up:  # server -> client
            self.clock.callLater(0.001, self.link.datagramReceived, datagram, SERVER)


class UdpClientTests(SynchronousTestCase):
    """The client against the real UDP side, in memory."""

    def setUp(self):
        self.clock = Clock()
        self.room = Room(self.clock)
        self.registry = NickRegistry()
        limits = Limits(flood=FloodPolicy(rate=0))
        self.chat = DatagramChat(self.room, self.registry, self.clock, Admission(0, 0), limits)

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

    def test_handshake_and_chat(self):
        self.start()
        self.assertTrue(self.client.joined)
        self.assertEqual(self.printed[0], "* you are uma; 1 online: uma")
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
        self.assertEqual(self.room.who(), [])
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
        self.assertEqual([nick for nick, _ in self.room.who()], ["uma"])
        self.assertNoResult(self.finished)

    def test_vanished_server_noticed_within_the_silence_limit(self):
        self.start()
        self.wire.up = False
        self.advance(SILENCE_LIMIT, step=0.5)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(self.printed[-1], "! server not answering")

    def test_shutdown_notice_then_bye_ends_with_0(self):
        self.start()
        self.room.close_all("server shutting down")
        self.advance(1)
        self.assertEqual(self.printed[-1], "* server shutting down")
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)

    def test_longest_line_is_taken_by_the_server(self):
        self.start()
        self.client.user_line("x" * UDP_MAX_LINE)
        self.advance(1)
        self.assertEqual(self.link.channel.outstanding, 0)
        self.assertEqual(
            self.printed, ["* you are uma; 1 online: uma", "* type /help for commands"]
        )
