"""
Tests for L{chatservice.tcp}: the line protocol telnet and nc users speak.

Units: each connection is a L{LineChatProtocol} built by the factory on a
L{StringTransport}; time is a L{Clock}.  The room hands out what a reactor
turn published at the end of the turn (C{clock.callLater(0, ...)}), so every
check of output first runs that turn with C{clock.advance(0)}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chatservice.flood import FloodPolicy
from chatservice.interfaces import IParticipant
from chatservice.limits import Admission, Limits
from chatservice.nicks import NickRegistry
from chatservice.room import Room
from chatservice.tcp import LineChatFactory, LineChatProtocol, SendQueue, strip_telnet

GREETING = b"* welcome to chatroom, what is your nickname?\r\n"
ASK_AGAIN = b"* what is your nickname?\r\n"
HELP = (
    b"* commands:\r\n"
    b"*   /who               list everyone online and how they are connected\r\n"
    b"*   /msg NICK text     send text to NICK only\r\n"
    b"*   /me text           show an action: * you text\r\n"
    b"*   /nick NAME         change your nickname\r\n"
    b"*   /quit [reason]     leave\r\n"
    b"*   /help              this list\r\n"
    b"*   //text             send a line that starts with /\r\n"
)


class _Harness(SynchronousTestCase):
    """Builds a room and factory on a Clock; connects users to it."""

    limits = Limits()

    def setUp(self):
        self.clock = Clock()
        self.registry = NickRegistry()
        self.room = Room(clock=self.clock)
        self.admission = Admission(self.limits.max_clients, self.limits.max_per_ip)
        self.factory = LineChatFactory(
            self.room, self.registry, self.clock, self.admission, self.limits
        )
        self._next_port = 50000

    def open(self, host="127.0.0.1"):
        """A new connection that has not chosen a nick; its greeting is cleared."""
        self._next_port += 1
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, self._next_port))
        out = StringTransport()
        proto.makeConnection(out)
        self.clock.advance(0)
        return proto, out

    def connect(self, nick, host="127.0.0.1"):
        """A user who joined as C{nick} (nc style), with all output so far cleared."""
        proto, out = self.open(host)
        proto.dataReceived(nick.encode("ascii") + b"\n")
        self.clock.advance(0)
        self.assertTrue(
            out.value().startswith(GREETING + f"* you are {nick};".encode()), out.value()
        )
        out.clear()
        return proto, out

    def connect_all(self, *nicks):
        """Several joined users; everyone's output (joins included) is cleared."""
        users = [self.connect(nick) for nick in nicks]
        self.clock.advance(0)
        for _, out in users:
            out.clear()
        return users

    def lose(self, proto, reason=ConnectionLost):
        """The connection of C{proto} is gone, as the reactor would report it."""
        proto.connectionLost(Failure(reason()))
        self.clock.advance(0)


class ConnectingTests(_Harness):
    """Greeting, choosing a nick, and the welcome."""

    def test_participant(self):
        proto, _ = self.open()
        self.assertTrue(verifyObject(IParticipant, proto))
        self.assertIsInstance(proto, LineChatProtocol)
        self.assertEqual(proto.via, "tcp")

    def test_greeting_on_connect(self):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        out = StringTransport()
        proto.makeConnection(out)
        self.clock.advance(0)
        self.assertEqual(out.value(), GREETING)
        self.assertFalse(out.disconnecting)

    def test_nc_style_lf_nick(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(),
            GREETING + b"* you are alice; 1 online: alice\r\n* type /help for commands\r\n",
        )
        self.assertEqual(proto.nick, "alice")

    def test_telnet_style_crlf_nick(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\r\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")
        self.assertEqual(
            out.value(),
            GREETING + b"* you are alice; 1 online: alice\r\n* type /help for commands\r\n",
        )

    def test_nick_split_over_chunks(self):
        proto, out = self.open()
        for byte in b"alice\r\n":
            proto.dataReceived(bytes([byte]))
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")

    def test_welcome_names_who_is_online_and_others_see_join(self):
        (alice, alice_out), = self.connect_all("alice")
        bob, bob_out = self.open()
        bob.dataReceived(b"bob\r\n")
        self.clock.advance(0)
        self.assertEqual(
            bob_out.value(),
            GREETING + b"* you are bob; 2 online: alice, bob\r\n* type /help for commands\r\n",
        )
        self.assertEqual(alice_out.value(), b"* bob joined\r\n")

    def test_invalid_nick_says_why_and_asks_again(self):
        proto, out = self.open()
        proto.dataReceived(b"9lives\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(),
            GREETING
            + b"! invalid nickname 9lives: it must not start with a digit or '-'\r\n"
            + ASK_AGAIN,
        )
        self.assertFalse(out.disconnecting)
        out.clear()
        proto.dataReceived(b"nine\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(), b"* you are nine; 1 online: nine\r\n* type /help for commands\r\n"
        )

    def test_nick_with_bad_characters_refused(self):
        proto, out = self.open()
        proto.dataReceived(b"a b\r\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(),
            GREETING
            + b"! invalid nickname a b: use only letters, digits and _-[]{}\\|^\r\n"
            + ASK_AGAIN,
        )
        self.assertIsNone(proto.nick)

    def test_taken_nick_says_why_and_asks_again(self):
        (alice, alice_out), = self.connect_all("alice")
        proto, out = self.open()
        proto.dataReceived(b"ALICE\r\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(), GREETING + b"! nickname ALICE is taken, try another\r\n" + ASK_AGAIN
        )
        self.assertFalse(out.disconnecting)
        self.assertEqual(alice_out.value(), b"")
        out.clear()
        proto.dataReceived(b"alice2\r\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(),
            b"* you are alice2; 2 online: alice, alice2\r\n* type /help for commands\r\n",
        )

    def test_trailing_cr_never_part_of_nick(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\r\r\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")
        self.assertEqual(self.room.find("alice"), proto)

    def test_leaving_before_joining_is_silent(self):
        (alice, alice_out), = self.connect_all("alice")
        proto, out = self.open()
        self.lose(proto)
        self.assertEqual(alice_out.value(), b"")
        self.assertEqual(self.room.connected, 1)


class ClosingTests(_Harness):
    """close() ends the session at once and never waits forever on a peer that does not read."""

    def test_close_frees_the_nick_at_once(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.close("server shutting down")
        self.clock.advance(0)
        self.assertIsNone(self.registry.holder("alice"))
        self.assertTrue(alice_out.disconnecting)

    def test_close_of_a_non_reader_is_cut_after_the_grace(self):
        from chatservice.tcp import CLOSE_GRACE

        (alice, alice_out), = self.connect_all("alice")
        aborted = []
        alice_out.abortConnection = lambda: aborted.append(True)
        d = alice.close("goodbye")
        self.clock.advance(CLOSE_GRACE - 0.1)
        self.assertEqual(aborted, [])
        self.clock.advance(0.2)
        self.assertEqual(aborted, [True])
        self.lose(alice)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NoDelayTests(_Harness):
    """Lines go out at once: Nagle's algorithm would hold them up to a delayed ACK (40 ms)."""

    def test_tcp_no_delay_is_set(self):
        class TcpTransport(StringTransport):
            no_delay = None

            def setTcpNoDelay(self, enabled):
                self.no_delay = enabled

        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = TcpTransport()
        proto.makeConnection(transport)
        self.assertIs(transport.no_delay, True)


class ChattingTests(_Harness):
    """Lines, commands and their rendering."""

    def test_line_goes_to_others_not_sender(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        alice.dataReceived(b"hi there\r\n")  # telnet style
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hi there\r\n")
        self.assertEqual(carol_out.value(), b"alice: hi there\r\n")
        self.assertEqual(alice_out.value(), b"")

    def test_lf_line_and_crlf_line(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"from nc\nfrom telnet\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: from nc\r\nalice: from telnet\r\n")

    def test_trailing_cr_never_part_of_message(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"one\r\r\ntwo\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: one\r\nalice: two\r\n")

    def test_line_split_over_chunks(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"hel")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        alice.dataReceived(b"lo\r")
        alice.dataReceived(b"\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hello\r\n")

    def test_utf8_relayed_intact(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        text = "héllo wörld, 世界, привет 🎉"
        alice.dataReceived(text.encode("utf-8") + b"\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: " + text.encode("utf-8") + b"\r\n")

    def test_utf8_character_split_over_chunks(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        data = "é世🎉\n".encode("utf-8")
        for byte in data:
            alice.dataReceived(bytes([byte]))
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), "alice: é世🎉\r\n".encode("utf-8"))

    def test_invalid_utf8_becomes_replacement_character(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"caf\xe9 au lait \xc3\n")
        self.clock.advance(0)
        self.assertEqual(
            bob_out.value(), "alice: caf\ufffd au lait \ufffd\r\n".encode("utf-8")
        )

    def test_empty_lines_ignored(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"\n\r\n   \r\n\t\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        self.assertEqual(alice_out.value(), b"")

    def test_help(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/help\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), HELP)
        self.assertEqual(bob_out.value(), b"")

    def test_help_before_joining(self):
        proto, out = self.open()
        proto.dataReceived(b"/help\n")
        self.clock.advance(0)
        self.assertEqual(out.value(), GREETING + HELP)

    def test_who_lists_users_with_transports(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        bob.dataReceived(b"/who\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"* 2 online: alice (tcp), bob (tcp)\r\n")
        self.assertEqual(alice_out.value(), b"")

    def test_who_keeps_joining_order_after_rename(self):
        """/who lists people in the order they joined, whatever they are called now."""
        (alice, _), (bob, bob_out), (carol, _) = self.connect_all("alice", "bob", "carol")
        alice.dataReceived(b"/nick alicia\n")
        self.clock.advance(0)
        bob_out.clear()
        bob.dataReceived(b"/who\n")
        self.clock.advance(0)
        self.assertEqual(
            bob_out.value(), b"* 3 online: alicia (tcp), bob (tcp), carol (tcp)\r\n"
        )

    def test_msg_is_private(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        alice.dataReceived(b"/msg bob psst, over here\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"[private] alice: psst, over here\r\n")
        self.assertEqual(carol_out.value(), b"")
        self.assertEqual(alice_out.value(), b"")

    def test_msg_nick_any_case(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/msg BOB hi\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"[private] alice: hi\r\n")

    def test_msg_unknown_nick(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/msg nobody hello?\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! no such user: nobody\r\n")
        self.assertEqual(bob_out.value(), b"")
        self.assertFalse(alice_out.disconnecting)

    def test_me(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/me waves\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"* alice waves\r\n")

    def test_nick_change_told_to_everyone(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/nick alicia\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"* alice is now known as alicia\r\n")
        self.assertEqual(bob_out.value(), b"* alice is now known as alicia\r\n")
        alice_out.clear()
        bob_out.clear()
        bob.dataReceived(b"/msg alicia hi\n")
        alice.dataReceived(b"back\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"[private] bob: hi\r\n")
        self.assertEqual(bob_out.value(), b"alicia: back\r\n")

    def test_nick_change_frees_the_old_nick(self):
        (alice, _), = self.connect_all("alice")
        alice.dataReceived(b"/nick alicia\n")
        self.clock.advance(0)
        other, out = self.open()
        other.dataReceived(b"alice\n")
        self.clock.advance(0)
        self.assertEqual(other.nick, "alice")

    def test_nick_change_to_taken_nick_refused(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/nick Bob\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! nickname Bob is taken, try another\r\n")
        self.assertEqual(bob_out.value(), b"")
        self.assertEqual(alice.nick, "alice")

    def test_quit_with_reason(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/quit off to bed\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"* goodbye\r\n")
        self.assertTrue(alice_out.disconnecting)
        self.assertEqual(bob_out.value(), b"* alice left (off to bed)\r\n")
        self.lose(alice, ConnectionDone)
        self.assertEqual(bob_out.value(), b"* alice left (off to bed)\r\n")
        self.assertEqual(self.room.connected, 1)
        self.assertIsNone(self.registry.holder("alice"))

    def test_quit_without_reason(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/quit\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"* goodbye\r\n")
        self.assertTrue(alice_out.disconnecting)
        self.assertEqual(bob_out.value(), b"* alice left (quit)\r\n")

    def test_lines_after_quit_in_same_chunk_ignored(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"bye all\n/quit\nstill here?\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: bye all\r\n* alice left (quit)\r\n")
        self.assertEqual(alice_out.value(), b"* goodbye\r\n")

    def test_double_slash_sends_slash_line(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"//etc/passwd is a file\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: /etc/passwd is a file\r\n")
        self.assertEqual(alice_out.value(), b"")

    def test_unknown_command(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/dance wildly\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! unknown command: /dance (try /help)\r\n")
        self.assertEqual(bob_out.value(), b"")
        self.assertFalse(alice_out.disconnecting)

    def test_connection_lost_tells_others(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        self.lose(alice)
        self.assertEqual(bob_out.value(), b"* alice left (connection lost)\r\n")
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.room.connected, 1)

    def test_lines_before_connection_lost_come_first(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"last words\n")
        self.lose(alice)
        self.assertEqual(
            bob_out.value(), b"alice: last words\r\n* alice left (connection lost)\r\n"
        )

    def test_output_lines_end_crlf(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"a\nb\r\n/me c\n/who\n/nosuch\n")
        self.clock.advance(0)
        for out in (alice_out, bob_out):
            data = out.value()
            self.assertTrue(data.endswith(b"\r\n"))
            self.assertEqual(data.count(b"\n"), data.count(b"\r\n"))
            self.assertEqual(data.count(b"\r"), data.count(b"\r\n"))


class LineLengthTests(_Harness):
    """An over-long line is refused, skipped to its newline, and harms nothing else."""

    limits = Limits(max_line=64)

    def test_line_at_the_limit_accepted(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"x" * 64 + b"\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: " + b"x" * 64 + b"\r\n")
        self.assertEqual(alice_out.value(), b"")

    def test_too_long_line_refused_and_discarded(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"y" * 65 + b"\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n")
        self.assertEqual(bob_out.value(), b"")
        self.assertFalse(alice_out.disconnecting)

    def test_following_lines_in_same_chunk_processed(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"before\n" + b"y" * 200 + b"\nafter\r\nand more\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n")
        self.assertEqual(
            bob_out.value(), b"alice: before\r\nalice: after\r\nalice: and more\r\n"
        )

    def test_connection_usable_after_long_line(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"z" * 100)
        alice.dataReceived(b"z" * 100)
        alice.dataReceived(b"zzz\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n")
        alice.dataReceived(b"still here\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: still here\r\n")

    def test_rest_discarded_up_to_newline_across_chunks(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"a" * 70)
        alice.dataReceived(b"b" * 10)
        alice.dataReceived(b"c" * 10 + b"\nnext\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n")
        self.assertEqual(bob_out.value(), b"alice: next\r\n")

    def test_two_long_lines_two_refusals(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"a" * 100 + b"\n" + b"b" * 100 + b"\nok\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n" * 2)
        self.assertEqual(bob_out.value(), b"alice: ok\r\n")

    def test_refusal_keeps_its_place_among_replies(self):
        """What a user sees answers its lines in the order it sent them."""
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"/who\n" + b"x" * 100 + b"\n/who\n")
        self.clock.advance(0)
        who = b"* 2 online: alice (tcp), bob (tcp)\r\n"
        self.assertEqual(
            alice_out.value(), who + b"! line too long (max 64 bytes)\r\n" + who
        )

    def test_long_nick_line_refused_connection_stays(self):
        proto, out = self.open()
        proto.dataReceived(b"n" * 100 + b"\n")
        self.clock.advance(0)
        self.assertIn(b"! line too long (max 64 bytes)\r\n", out.value())
        self.assertFalse(out.disconnecting)
        proto.dataReceived(b"nina\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "nina")

    def test_streaming_without_newline_keeps_buffer_bounded(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        chunk = b"w" * 50
        largest = 0
        for _ in range(2000):  # 100 kB, over 1500 times the limit
            alice.dataReceived(chunk)
            largest = max(largest, len(alice._buffer))
        self.assertLessEqual(largest, 64 + len(chunk))
        alice.dataReceived(b"w\nfinally\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"! line too long (max 64 bytes)\r\n")
        self.assertEqual(bob_out.value(), b"alice: finally\r\n")

    def test_max_line_from_limits(self):
        proto, _ = self.open()
        self.assertEqual(proto.MAX_LENGTH, 64)


class TelnetTests(_Harness):
    """Telnet IAC negotiation is stripped, never relayed."""

    def test_negotiation_before_nick_stripped(self):
        proto, out = self.open()
        proto.dataReceived(b"\xff\xfb\x01\xff\xfa\x18\x01\xff\xf0alice\r\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")

    def test_negotiation_in_a_line_stripped(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"\xff\xfd\x03hel\xff\xfb\x01lo\xff\xfa\x18\x01\xff\xf0 you\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hello you\r\n")

    def test_negotiation_only_line_ignored(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x18\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        self.assertEqual(alice_out.value(), b"")

    def test_negotiation_split_over_chunks(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"\xff")
        alice.dataReceived(b"\xfb")
        alice.dataReceived(b"\x01hi\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hi\r\n")

    def test_strip_telnet(self):
        self.assertEqual(strip_telnet(b"\xff\xfb\x01abc"), b"abc")
        self.assertEqual(strip_telnet(b"a\xff\xfa\x18\x01\xff\xf0b"), b"ab")
        self.assertEqual(strip_telnet(b"a\xff\xf1b"), b"ab")  # IAC NOP
        self.assertEqual(strip_telnet(b"plain"), b"plain")


class SlowReaderTests(_Harness):
    """A user who does not read has its output queued, within a bound."""

    limits = Limits(max_backlog=200, flood=FloodPolicy(rate=0))

    def test_queue_is_the_registered_streaming_producer(self):
        proto, out = self.open()
        self.assertIsInstance(out.producer, SendQueue)
        self.assertTrue(out.streaming)
        self.assertTrue(verifyObject(IPushProducer, out.producer))

    def test_paused_output_queues_and_resumes_in_order(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        bob_out.producer.pauseProducing()
        alice.dataReceived(b"one\n")
        self.clock.advance(0)
        alice.dataReceived(b"two\n/me three\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        bob_out.producer.resumeProducing()
        self.assertEqual(
            bob_out.value(), b"alice: one\r\nalice: two\r\n* alice three\r\n"
        )
        alice.dataReceived(b"four\n")
        self.clock.advance(0)
        self.assertEqual(
            bob_out.value(),
            b"alice: one\r\nalice: two\r\n* alice three\r\nalice: four\r\n",
        )

    def test_paused_user_within_backlog_stays(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        bob_out.producer.pauseProducing()
        for _ in range(10):
            alice.dataReceived(b"0123456789\n")  # 19 bytes each as bob sees it
            self.clock.advance(0)
        self.assertEqual(bob_out.producer.size, 190)
        self.assertFalse(bob_out.disconnecting)
        self.assertEqual(alice_out.value(), b"")

    def test_past_backlog_user_dropped(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        bob_out.producer.pauseProducing()
        with capturedLogs() as events:
            for _ in range(11):
                alice.dataReceived(b"0123456789\n")
                self.clock.advance(0)
        self.assertTrue(bob_out.disconnecting)
        self.assertEqual(bob_out.value(), b"")
        self.assertEqual(
            carol_out.value(),
            b"alice: 0123456789\r\n" * 11 + b"* bob left (too slow to read)\r\n",
        )
        self.assertEqual(alice_out.value(), b"* bob left (too slow to read)\r\n")
        self.assertIsNone(self.room.find("bob"))
        self.assertIsNone(self.registry.holder("bob"))
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual([e.get("nick") for e in warnings], ["bob"])
        # The reactor then reports the aborted connection; nothing more is said.
        self.lose(bob)
        self.assertEqual(carol_out.value().count(b"bob left"), 1)
        self.assertEqual(self.room.connected, 2)
        self.assertEqual(self.admission.total, 2)

    def test_slow_reader_never_slows_others(self):
        (alice, _), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        bob_out.producer.pauseProducing()
        alice.dataReceived(b"hello\n")
        self.clock.advance(0)
        self.assertEqual(carol_out.value(), b"alice: hello\r\n")
        self.assertEqual(bob_out.value(), b"")


class AdmissionTests(_Harness):
    """Connections over the limits get one refusal line and are closed."""

    limits = Limits(max_clients=3, max_per_ip=2)

    def refused(self, host):
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        out = StringTransport()
        proto.makeConnection(out)
        self.clock.advance(0)
        return proto, out

    def test_too_many_from_one_address(self):
        self.open("10.0.0.1")
        self.open("10.0.0.1")
        with capturedLogs() as events:
            _, out = self.refused("10.0.0.1")
        self.assertEqual(
            out.value(), b"! too many connections from your address (max 2)\r\n"
        )
        self.assertTrue(out.disconnecting)
        self.assertEqual(
            [e["host"] for e in events if e["log_level"] is LogLevel.warn], ["10.0.0.1"]
        )
        other, other_out = self.open("10.0.0.2")
        self.assertEqual(other_out.value(), GREETING)

    def test_server_full(self):
        self.open("10.0.0.1")
        self.open("10.0.0.2")
        self.open("10.0.0.3")
        _, out = self.refused("10.0.0.4")
        self.assertEqual(out.value(), b"! server full (3 clients), try later\r\n")
        self.assertTrue(out.disconnecting)

    def test_slot_freed_when_connection_lost(self):
        first, _ = self.open("10.0.0.1")
        self.open("10.0.0.1")
        self.lose(first)
        again, out = self.open("10.0.0.1")
        self.assertEqual(out.value(), GREETING)
        self.assertEqual(self.admission.total, 2)

    def test_refused_connection_takes_no_slot(self):
        self.open("10.0.0.1")
        self.open("10.0.0.1")
        refused, _ = self.refused("10.0.0.1")
        refused.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.admission.total, 2)
        self.open("10.0.0.2")
        _, out = self.refused("10.0.0.3")
        self.assertEqual(out.value(), b"! server full (3 clients), try later\r\n")


class LoginTimeoutTests(_Harness):
    """A connection that never chooses a nick is closed after login_timeout."""

    limits = Limits(login_timeout=30)

    def test_no_nick_in_time_closes(self):
        proto, out = self.open()
        out.clear()
        self.clock.advance(29.9)
        self.assertEqual(out.value(), b"")
        self.assertFalse(out.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(out.value(), b"* no nickname chosen within 30 seconds\r\n")
        self.assertTrue(out.disconnecting)
        self.lose(proto, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.admission.total, 0)

    def test_timeout_not_told_to_others(self):
        (alice, alice_out), = self.connect_all("alice")
        proto, out = self.open()
        self.clock.advance(30)
        self.assertEqual(alice_out.value(), b"")

    def test_choosing_a_nick_cancels_the_timer(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\n")
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        out.clear()
        self.clock.advance(3600)
        self.assertEqual(out.value(), b"")
        self.assertFalse(out.disconnecting)

    def test_refused_nick_does_not_extend_the_timer(self):
        proto, out = self.open()
        self.clock.advance(20)
        proto.dataReceived(b"9bad\n")
        self.clock.advance(10)
        self.assertTrue(out.disconnecting)

    def test_disconnect_cancels_the_timer(self):
        proto, out = self.open()
        self.lose(proto)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CloseTests(_Harness):
    """IParticipant.close: say why, flush, hang up, fire once gone."""

    def test_close_says_reason_and_fires_once_gone(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        d = alice.close("server shutting down")
        self.assertEqual(alice_out.value(), b"* server shutting down\r\n")
        self.assertTrue(alice_out.disconnecting)
        self.assertNoResult(d)
        self.lose(alice, ConnectionDone)
        self.assertIsNone(self.successResultOf(d))

    def test_close_flushes_queued_output_first(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        bob_out.producer.pauseProducing()
        alice.dataReceived(b"queued\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        bob.close("server shutting down")
        self.assertEqual(bob_out.value(), b"alice: queued\r\n* server shutting down\r\n")

    def test_close_after_gone_fires_at_once(self):
        (alice, _), = self.connect_all("alice")
        self.lose(alice)
        self.assertIsNone(self.successResultOf(alice.close("late")))

    def test_close_all_reaches_users_not_yet_joined(self):
        (alice, alice_out), = self.connect_all("alice")
        proto, out = self.open()
        out.clear()
        d = self.room.close_all("server shutting down")
        self.assertEqual(alice_out.value(), b"* server shutting down\r\n")
        self.assertEqual(out.value(), b"* server shutting down\r\n")
        self.assertNoResult(d)
        self.lose(alice, ConnectionDone)
        self.lose(proto, ConnectionDone)
        self.successResultOf(d)
