"""
Tests for L{chatservice.frontends.line}: the line protocol telnet and nc users speak.

Units: each connection is a L{LineChatProtocol} built by the factory on a
L{StringTransport}; time is a L{Clock}.  The hub hands out what a reactor
turn published at the end of the turn (C{clock.callLater(0, ...)}), so every
check of output first runs that turn with C{clock.advance(0)}.
"""

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from chatservice.core.commands import HELP_LINES
from chatservice.core.events import Notice
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.interfaces import IParticipant
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.line import LineChatFactory, LineChatProtocol, SendQueue
from chatservice.frontends.telnet import TelnetDecoder
from tests import support

IAC, DO, DONT, WILL, WONT, SB, SE = b"\xff", b"\xfd", b"\xfe", b"\xfb", b"\xfc", b"\xfa", b"\xf0"
IP, EL, EC, AO, AYT, BRK = b"\xf4", b"\xf8", b"\xf7", b"\xf5", b"\xf6", b"\xf3"
TM, ECHO, SGA, TTYPE = b"\x06", b"\x01", b"\x03", b"\x18"
#: What Debian's telnet sends on Ctrl-C; it then shows nothing until the WILL TIMING-MARK.
CTRL_C = IAC + IP + IAC + DO + TM
TM_ANSWER = IAC + WILL + TM

GREETING = b"* welcome to chatroom, what is your nickname?\r\n"
ASK_AGAIN = b"* what is your nickname?\r\n"
#: /help as a TCP user reads it: one "* " line per line of the list (the list itself is
#: pinned in tests.test_commands), each ending in CRLF.
HELP = b"".join(b"* " + line.encode() + b"\r\n" for line in HELP_LINES)


class _Harness(SynchronousTestCase):
    """Builds a hub and factory on a Clock; connects users to it."""

    limits = Limits()
    factory_class = LineChatFactory

    def setUp(self):
        self.clock = Clock()
        self.registry = NickRegistry()
        self.hub = Hub(self.clock)
        self.admission = Admission(self.limits.max_clients, self.limits.max_per_ip)
        self.factory = self.factory_class(
            self.hub, self.registry, self.clock, self.admission, self.limits
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
            GREETING + b"* you are alice; 1 in #lobby: alice\r\n* type /help for commands\r\n",
        )
        self.assertEqual(proto.nick, "alice")

    def test_telnet_style_crlf_nick(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\r\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")
        self.assertEqual(
            out.value(),
            GREETING + b"* you are alice; 1 in #lobby: alice\r\n* type /help for commands\r\n",
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
            GREETING + b"* you are bob; 2 in #lobby: alice, bob\r\n* type /help for commands\r\n",
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
            out.value(), b"* you are nine; 1 in #lobby: nine\r\n* type /help for commands\r\n"
        )

    def test_nick_with_bad_characters_refused(self):
        proto, out = self.open()
        proto.dataReceived(b"a b\r\n")
        self.clock.advance(0)
        self.assertEqual(
            out.value(),
            GREETING
            + b"! invalid nickname a b: use only ASCII letters, digits and _-[]{}\\|^\r\n"
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
            b"* you are alice2; 2 in #lobby: alice, alice2\r\n* type /help for commands\r\n",
        )

    def test_trailing_cr_never_part_of_nick(self):
        proto, out = self.open()
        proto.dataReceived(b"alice\r\r\n")
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")
        self.assertEqual(self.hub.find("alice"), proto)

    def test_leaving_before_joining_is_silent(self):
        (alice, alice_out), = self.connect_all("alice")
        proto, out = self.open()
        self.lose(proto)
        self.assertEqual(alice_out.value(), b"")
        self.assertEqual(self.hub.connected, 1)


class ClosingTests(_Harness):
    """
    The session alone ends a session: close() only says goodbye and hangs up, and
    never waits forever on a peer that does not read.
    """

    def test_session_end_frees_the_nick_at_once_and_hangs_up(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        d = alice._session.end("kicked", goodbye="you were kicked")
        self.assertIsNone(self.registry.holder("alice"))
        self.assertIsNone(self.hub.find("alice"))
        self.assertEqual(alice_out.value(), b"* you were kicked\r\n")
        self.assertTrue(alice_out.disconnecting)
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"* alice left (kicked)\r\n")
        self.assertNoResult(d)
        self.lose(alice, ConnectionDone)
        self.successResultOf(d)
        # The connection's end is not a second leave.
        self.assertEqual(bob_out.value(), b"* alice left (kicked)\r\n")
        self.assertEqual(self.hub.connected, 1)

    def test_close_hangs_up_without_ending_the_session(self):
        """close() is the session's call to hang up; it never ends the session itself."""
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        d = alice.close("goodbye")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"* goodbye\r\n")
        self.assertTrue(alice_out.disconnecting)
        self.assertIs(self.registry.holder("alice"), alice._session)
        self.assertEqual(bob_out.value(), b"")
        # The connection's end is what tells the session, once.
        self.lose(alice, ConnectionDone)
        self.successResultOf(d)
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(bob_out.value(), b"* alice left (connection lost)\r\n")

    def test_close_of_a_non_reader_is_cut_after_the_grace(self):
        from chatservice.frontends.line import CLOSE_GRACE

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
        lines = alice_out.value().split(b"\r\n")[:-1]
        self.assertEqual(lines[0], b"* commands:")
        for command in (b"/join #room", b"/part [#room]", b"/rooms", b"/who [#room]",
                        b"/topic [#room]", b"/history [#room]", b"/msg NICK", b"/quit"):
            self.assertTrue(any(line.startswith(b"*   " + command) for line in lines), command)

    def test_help_before_joining(self):
        proto, out = self.open()
        proto.dataReceived(b"/help\n")
        self.clock.advance(0)
        self.assertEqual(out.value(), GREETING + HELP)

    def test_who_lists_users_with_transports(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        bob.dataReceived(b"/who\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"* 2 in #lobby: alice (tcp), bob (tcp)\r\n")
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
            bob_out.value(), b"* 3 in #lobby: alicia (tcp), bob (tcp), carol (tcp)\r\n"
        )

    def test_msg_is_private(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        alice.dataReceived(b"/msg bob psst, over here\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"[private] alice: psst, over here\r\n")
        self.assertEqual(carol_out.value(), b"")
        self.assertEqual(alice_out.value(), b"-> bob: psst, over here\r\n")

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
        self.assertEqual(bob_out.value(), b"-> alicia: hi\r\nalicia: back\r\n")

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
        self.assertEqual(self.hub.connected, 1)
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
        self.assertEqual(self.hub.connected, 1)

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


class RoomTests(_Harness):
    """
    Rooms on the line protocol (issue 9): a current room whose lines look as before,
    other rooms' lines marked with the room, user events shown once.
    """

    def say(self, proto, *lines):
        """C{proto} types C{lines} (nc style), then the turn ends."""
        proto.dataReceived(b"".join(line + b"\n" for line in lines))
        self.clock.advance(0)

    def read(self, out):
        """The lines C{out} received since the last read, without their CRLF; clears it."""
        data = out.value()
        out.clear()
        self.assertTrue(data == b"" or data.endswith(b"\r\n"), data)
        return data.decode("utf-8").split("\r\n")[:-1]

    def test_everyone_lands_in_the_lobby(self):
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        self.assertEqual(alice.room, "#lobby")
        self.assertEqual([room.name for room in self.hub.rooms_of(bob)], ["#lobby"])
        self.say(bob, b"/who")
        self.assertEqual(self.read(bob_out), ["* 2 in #lobby: alice (tcp), bob (tcp)"])

    def test_current_room_unmarked_other_rooms_marked(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        self.say(alice, b"/join #dev")
        self.assertEqual(self.read(alice_out), ["* you joined #dev; 1 here: alice"])
        self.assertEqual(self.read(bob_out), [])  # bob is not in #dev
        self.assertEqual(alice.room, "#dev")
        # alice's lines go to #dev now; the lobby still reaches her, marked.
        self.say(bob, b"still in the lobby")
        self.assertEqual(self.read(alice_out), ["[#lobby] bob: still in the lobby"])
        self.say(alice, b"/join #lobby")  # already a member: only the current room changes
        self.assertEqual(self.read(alice_out), ["* your lines go to #lobby"])
        self.say(bob, b"/join #dev")
        self.assertEqual(self.read(bob_out), ["* you joined #dev; 2 here: alice, bob"])
        self.assertEqual(self.read(alice_out), ["[#dev] * bob joined"])
        self.say(bob, b"text", b"/me waves")
        self.assertEqual(self.read(alice_out), ["[#dev] bob: text", "[#dev] * bob waves"])
        self.say(alice, b"from the lobby")
        self.assertEqual(self.read(bob_out), ["[#lobby] alice: from the lobby"])
        # In the current room, exactly as before rooms existed.
        self.say(alice, b"/join #dev")
        self.assertEqual(self.read(alice_out), ["* your lines go to #dev"])
        self.say(bob, b"text")
        self.say(alice, b"/me nods", b"reply")
        self.assertEqual(self.read(alice_out), ["bob: text"])
        self.assertEqual(self.read(bob_out), ["* alice nods", "alice: reply"])

    def test_one_turn_across_two_rooms_keeps_its_order(self):
        """A user in two rooms sees one turn's lines from both in the order they were said."""
        (alice, _), (bob, bob_out), (carol, _) = self.connect_all("alice", "bob", "carol")
        self.say(alice, b"/join #dev")
        self.say(bob, b"/join #dev", b"/join #lobby")
        self.read(bob_out)
        for n in range(3):
            alice.dataReceived(b"dev %d\n" % n)
            carol.dataReceived(b"lobby %d\n" % n)
        deliveries = []
        deliver = bob.deliver
        bob.deliver = lambda batch: deliveries.append(batch) or deliver(batch)
        self.clock.advance(0)
        self.assertEqual(len(deliveries), 1)
        self.assertEqual(
            self.read(bob_out),
            [line for n in range(3) for line in (f"[#dev] alice: dev {n}", f"carol: lobby {n}")],
        )

    def join_both(self):
        """alice and bob in #lobby and #dev, carol in the lobby only, dave in #dev only."""
        users = self.connect_all("alice", "bob", "carol", "dave")
        (alice, _), (bob, _), (carol, _), (dave, _) = users
        for proto in (alice, bob, dave):
            self.say(proto, b"/join #dev")
        self.say(dave, b"/part #lobby")
        for _, out in users:
            out.clear()
        return users

    def test_rename_reaches_each_user_once(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out), (dave, dave_out) = (
            self.join_both()
        )
        self.say(alice, b"/nick alicia")
        for out in (alice_out, bob_out, carol_out, dave_out):
            self.assertEqual(self.read(out), ["* alice is now known as alicia"])

    def test_quit_reaches_each_user_once(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out), (dave, dave_out) = (
            self.join_both()
        )
        self.say(alice, b"/quit off")
        self.assertEqual(self.read(alice_out), ["* goodbye"])
        for out in (bob_out, carol_out, dave_out):
            self.assertEqual(self.read(out), ["* alice left (off)"])
        self.lose(alice, ConnectionDone)
        for out in (bob_out, carol_out, dave_out):
            self.assertEqual(self.read(out), [])

    def test_connection_lost_reaches_each_user_once(self):
        (alice, _), (bob, bob_out), (carol, carol_out), (dave, dave_out) = self.join_both()
        self.lose(alice)
        for out in (bob_out, carol_out, dave_out):
            self.assertEqual(self.read(out), ["* alice left (connection lost)"])
        self.assertEqual(self.hub.who(self.hub.room("#dev")), (("bob", "tcp"), ("dave", "tcp")))

    def test_user_events_reach_nobody_outside_the_rooms(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out), (dave, dave_out) = (
            self.join_both()
        )
        self.say(carol, b"/join #elsewhere", b"/part #lobby")
        self.assertEqual(self.read(bob_out), ["[#lobby] * carol left the room"])
        carol_out.clear()
        self.say(alice, b"/nick alicia", b"/quit")
        self.assertEqual(self.read(carol_out), [])
        self.assertEqual(
            self.read(bob_out), ["* alice is now known as alicia", "* alicia left (quit)"]
        )

    def test_part_is_shown_to_the_room_with_its_reason(self):
        (alice, alice_out), (bob, bob_out) = self.join_both()[:2]
        self.say(bob, b"/part #dev see you in the lobby")
        self.assertEqual(self.read(bob_out), ["* you left #dev; your lines go to #lobby"])
        self.assertEqual(self.read(alice_out), ["* bob left the room (see you in the lobby)"])
        self.say(bob, b"/part")
        self.assertEqual(
            self.read(bob_out), ["* you left #lobby; you are in no room now (/join #room)"]
        )
        self.assertEqual(self.read(alice_out), ["[#lobby] * bob left the room"])

    def test_rooms_lists_every_room_with_count_and_topic(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        self.say(alice, b"/join #dev", b"/topic release on friday")
        self.assertEqual(
            self.read(alice_out),
            ["* you joined #dev; 1 here: alice", "* alice set the topic: release on friday"],
        )
        self.assertEqual(self.read(bob_out), [])  # topic changes go to the room's members
        self.say(bob, b"/rooms")
        self.assertEqual(
            self.read(bob_out),
            ["* 2 rooms:", "*   #dev (1): release on friday", "*   #lobby (2)"],
        )
        self.say(bob, b"/join #Dev")  # names fold as nicks do; the creator's spelling stays
        self.assertEqual(
            self.read(bob_out),
            ["* you joined #dev; 2 here: alice, bob; topic: release on friday"],
        )
        self.say(bob, b"/who")
        self.assertEqual(self.read(bob_out), ["* 2 in #dev: alice (tcp), bob (tcp)"])

    def test_an_empty_room_disappears_from_rooms(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        self.say(alice, b"/join #dev", b"/join #ops")
        self.say(bob, b"/rooms")
        self.assertEqual(
            self.read(bob_out), ["* 3 rooms:", "*   #dev (1)", "*   #lobby (2)", "*   #ops (1)"]
        )
        self.say(alice, b"/part #dev")
        self.assertEqual(self.read(alice_out)[-1], "* you left #dev; your lines go to #ops")
        self.lose(alice)  # the last one in #ops goes
        self.say(bob, b"/rooms")
        self.assertEqual(self.read(bob_out), ["* alice left (connection lost)", "* 1 room:",
                                              "*   #lobby (1)"])
        # The default room stays, even empty.
        self.say(bob, b"/part", b"/rooms")
        self.assertEqual(
            self.read(bob_out),
            ["* you left #lobby; you are in no room now (/join #room)", "* 1 room:",
             "*   #lobby (0)"],
        )

    def test_refusals(self):
        (alice, alice_out), = self.connect_all("alice")
        self.say(alice, b"/join dev", b"/part #nowhere", b"/who #nowhere")
        self.assertEqual(
            self.read(alice_out),
            ["! not a room name: dev (# and 1 to 50 letters, digits or -_.)",
             "! no such room: #nowhere", "! no such room: #nowhere"],
        )
        self.say(alice, b"/part", b"lost line")
        self.assertEqual(
            self.read(alice_out),
            ["* you left #lobby; you are in no room now (/join #room)",
             "! you are in no room: /join #room first"],
        )


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
        who = b"* 2 in #lobby: alice (tcp), bob (tcp)\r\n"
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


class RecordingSession:
    """Stands in for the session: records the lines it is handed, and can pause on some."""

    def __init__(self, participant):
        self.participant = participant
        self.lines = []
        self.on_line = {}  # line text -> callable run while handling it
        self.ended = None
        self.calls = []  # ("end", reason, goodbye) and ("connection_lost",), in order

    def start(self):
        pass

    def handle(self, line):
        self.lines.append(line)
        action = self.on_line.get(line)
        if action is not None:
            action()

    def end(self, reason, goodbye=None):
        self.calls.append(("end", reason, goodbye))
        self.ended = reason

    def connection_lost(self):
        self.calls.append(("connection_lost",))
        self.ended = "connection lost"


class _RecordingFactory(LineChatFactory):
    """Gives each connection a L{RecordingSession} instead of the chat rules."""

    def make_session(self, participant):
        return RecordingSession(participant)


class _FakeSessionHarness(_Harness):
    """Connections whose session is a L{RecordingSession}: what the protocol hands over, exactly."""

    factory_class = _RecordingFactory

    def open(self, host="127.0.0.1"):
        proto, out = super().open(host)
        return proto, out, proto._session


class EndingOwnershipTests(_FakeSessionHarness):
    """The protocol never ends the session from close(); it reports its connection's end, once."""

    def test_close_does_not_end_the_session(self):
        proto, out, session = self.open()
        d = proto.close("goodbye")
        self.assertTrue(out.disconnecting)
        self.assertEqual(session.calls, [])
        self.lose(proto, ConnectionDone)
        self.successResultOf(d)
        self.assertEqual(session.calls, [("connection_lost",)])

    def test_connection_lost_is_reported_once(self):
        proto, out, session = self.open()
        self.lose(proto)
        self.assertEqual(session.calls, [("connection_lost",)])
        self.assertIsNone(self.successResultOf(proto.close("late")))
        self.assertEqual(session.calls, [("connection_lost",)])


class TelnetTests(_Harness):
    """Telnet commands are answered or applied, never relayed (every case: tests.test_telnet)."""

    def test_negotiation_before_nick_refused_and_stripped(self):
        proto, out = self.open()
        out.clear()
        proto.dataReceived(IAC + WILL + ECHO + IAC + SB + TTYPE + b"\x01" + IAC + SE + b"alice\r\n")
        self.assertEqual(out.value(), IAC + DONT + ECHO)
        self.clock.advance(0)
        self.assertEqual(proto.nick, "alice")

    def test_negotiation_in_a_line_stripped(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(IAC + DO + SGA + b"hel" + IAC + WILL + ECHO + b"lo"
                           + IAC + SB + TTYPE + b"\x01" + IAC + SE + b" you\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hello you\r\n")
        self.assertEqual(alice_out.value(), IAC + WONT + SGA + IAC + DONT + ECHO)

    def test_negotiation_only_line_relays_nothing(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(IAC + WILL + ECHO + IAC + WILL + SGA + IAC + DO + TTYPE + b"\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"")
        self.assertEqual(
            alice_out.value(), IAC + DONT + ECHO + IAC + DONT + SGA + IAC + WONT + TTYPE
        )

    def test_wont_and_dont_get_no_answer(self):
        (alice, alice_out), = self.connect_all("alice")
        alice.dataReceived(IAC + WONT + ECHO + IAC + DONT + SGA + IAC + DONT + TM)
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"")

    def test_negotiation_split_over_chunks(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"\xff")
        alice.dataReceived(b"\xfb")
        self.assertEqual(alice_out.value(), b"")
        alice.dataReceived(b"\x01hi\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: hi\r\n")
        self.assertEqual(alice_out.value(), IAC + DONT + ECHO)

    def test_ctrl_c_is_answered_and_lines_keep_coming(self):
        """The issue: after Ctrl-C telnet shows nothing until its timing mark is answered."""
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(CTRL_C)
        self.assertEqual(alice_out.value(), TM_ANSWER)
        bob.dataReceived(b"still there?\r\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), TM_ANSWER + b"bob: still there?\r\n")
        alice.dataReceived(b"yes\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: yes\r\n")

    def test_every_ctrl_c_is_answered(self):
        (alice, alice_out), = self.connect_all("alice")
        for _ in range(3):
            alice.dataReceived(CTRL_C)
        self.assertEqual(alice_out.value(), TM_ANSWER * 3)

    def test_timing_mark_answer_keeps_its_place_behind_queued_output(self):
        """Sent through the send queue: it never overtakes output telnet is to discard."""
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice_out.producer.pauseProducing()  # alice's socket buffer is full
        bob.dataReceived(b"before\n")
        self.clock.advance(0)
        alice.dataReceived(CTRL_C)
        bob.dataReceived(b"after\n")
        self.clock.advance(0)
        self.assertEqual(alice_out.value(), b"")
        alice_out.producer.resumeProducing()
        self.assertEqual(alice_out.value(), b"bob: before\r\n" + TM_ANSWER + b"bob: after\r\n")

    def test_other_commands_break_nothing(self):
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(
            IAC + AO + IAC + DO + TM + IAC + BRK + IAC + AYT + b"\xff\xf1\xff\xf2ok\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: ok\r\n")
        self.assertEqual(alice_out.value(), TM_ANSWER)
        self.assertFalse(alice_out.disconnecting)

    def test_no_answer_once_closing(self):
        (alice, alice_out), = self.connect_all("alice")
        alice.close("bye")
        alice_out.clear()
        alice.dataReceived(CTRL_C + IAC + DO + ECHO)
        self.assertEqual(alice_out.value(), b"")

    def test_iac_iac_is_one_ff_byte(self):
        """0xFF is never UTF-8, so the others see U+FFFD, as for any invalid byte."""
        (alice, _), (bob, bob_out) = self.connect_all("alice", "bob")
        alice.dataReceived(b"a" + IAC + IAC + b"b\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), "alice: a\ufffdb\r\n".encode())

    def test_long_subnegotiation_bounded_and_logged(self):
        from chatservice.frontends.telnet import MAX_SUBNEGOTIATION

        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        with capturedLogs() as events:
            alice.dataReceived(IAC + SB + TTYPE)
            for _ in range(MAX_SUBNEGOTIATION // 1000):
                alice.dataReceived(b"\x00" * 1000)
            self.assertEqual(alice._buffer, b"")
            alice.dataReceived(b"\x00" * 1000 + b"\nback\r\n")
        self.clock.advance(0)
        self.assertEqual(bob_out.value(), b"alice: back\r\n")
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("subnegotiation", warnings[0]["log_format"])

    def test_commands_logged_at_debug_with_answers(self):
        (alice, _), = self.connect_all("alice")
        with capturedLogs() as events:
            alice.dataReceived(CTRL_C)
        [event] = [e for e in events if "commands" in e]
        self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual(event["commands"], ("IP", "DO TIMING-MARK"))
        self.assertEqual(event["answers"], ("WILL TIMING-MARK",))
        self.assertEqual(event["nick"], "alice")


class TelnetLineTests(_FakeSessionHarness):
    """Exactly the lines the session is handed: line ends, erasing, interrupts."""

    def test_each_line_end_is_one_line(self):
        for end in (b"\r\n", b"\r\x00", b"\n"):
            proto, _, session = self.open()
            proto.dataReceived(b"one" + end + b"two" + end)
            self.assertEqual(session.lines, ["one", "two"], end)

    def test_cr_at_end_of_a_read(self):
        for second in (b"\n", b"\x00"):
            proto, _, session = self.open()
            proto.dataReceived(b"hello\r")
            self.assertEqual(session.lines, [])
            proto.dataReceived(second + b"next\r")
            self.assertEqual(session.lines, ["hello"], second)
            proto.dataReceived(second)
            self.assertEqual(session.lines, ["hello", "next"], second)

    def test_every_split_of_a_telnet_stream(self):
        stream = b"a\r\nb\r\x00c\nd" + CTRL_C + b"e\xc3\xa9\x7f\r\n" + IAC + IAC + b"\r\n"
        for cut in range(len(stream) + 1):
            proto, out, session = self.open()
            out.clear()
            proto.dataReceived(stream[:cut])
            proto.dataReceived(stream[cut:])
            self.assertEqual(session.lines, ["a", "b", "c", "e", "\ufffd"], cut)
            self.assertEqual(out.value(), TM_ANSWER, cut)

    def test_nc_lines_unchanged_and_never_decoded(self):
        """A read without IAC or CR skips the telnet decoder: nc's hot path costs nothing more."""
        proto, _, session = self.open()
        calls = []

        class SpyDecoder(TelnetDecoder):
            def decode(self, data):
                calls.append(("decode", data))
                return super().decode(data)

            def line_ends(self, data):
                calls.append(("line_ends", data))
                return super().line_ends(data)

        proto._telnet = SpyDecoder()
        text = "plain \t line, ünïcode 世界 🎉, \x00 \x1b[31m and \x85"
        proto.dataReceived(text.encode() + b"\nsecond\nthi")
        proto.dataReceived(b"rd\n")
        self.assertEqual(session.lines, [text, "second", "third"])
        self.assertEqual(calls, [])
        proto.dataReceived(b"telnet\r\n")
        proto.dataReceived(b"ctrl-c" + CTRL_C)
        self.assertEqual(calls, [("line_ends", b"telnet\r\n"), ("decode", b"ctrl-c" + CTRL_C)])

    def test_backspace_and_delete_erase_a_character(self):
        proto, _, session = self.open()
        proto.dataReceived(b"helo\x08lo\nwrold\x7f\x7f\x7f\x7forld\r\n")
        self.assertEqual(session.lines, ["hello", "world"])

    def test_erase_on_an_empty_line_does_nothing(self):
        proto, _, session = self.open()
        proto.dataReceived(b"\x08\x7fhi\n\x7f\n")
        self.assertEqual(session.lines, ["hi", ""])

    def test_erase_takes_a_whole_utf8_character(self):
        proto, _, session = self.open()
        proto.dataReceived("caf\u00e9\x7fe 世\x08界 🎉\x7f!\n".encode())
        self.assertEqual(session.lines, ["cafe 界 !"])

    def test_erase_reaches_into_an_earlier_read(self):
        proto, _, session = self.open()
        proto.dataReceived("ab世".encode()[:-1])  # the last character cut in two
        proto.dataReceived("ab世".encode()[-1:] + b"\x7f\x7fc\r\n")
        self.assertEqual(session.lines, ["ac"])

    def test_telnet_erase_character_and_erase_line(self):
        proto, _, session = self.open()
        proto.dataReceived(b"abx" + IAC + EC + b"c\r\n" + b"scrap" + IAC + EL + b"kept\r\n")
        self.assertEqual(session.lines, ["abc", "kept"])

    def test_interrupt_discards_the_partial_line_only(self):
        proto, _, session = self.open()
        proto.dataReceived(b"done\r\nhalf a li")
        proto.dataReceived(b"ne" + CTRL_C)
        proto.dataReceived(b"fresh\r\n")
        self.assertEqual(session.lines, ["done", "fresh"])


class TelnetLongLineTests(_FakeSessionHarness):
    """The line limit with telnet line ends and interrupts."""

    limits = Limits(max_line=8)

    def test_interrupt_ends_the_discard_of_a_long_line(self):
        proto, out, session = self.open()
        proto.dataReceived(b"x" * 20)
        self.clock.advance(0)
        self.assertEqual(out.value(), b"! line too long (max 8 bytes)\r\n")
        proto.dataReceived(b"xx" + CTRL_C + b"short\r\n")
        self.assertEqual(session.lines, ["short"])

    def test_limit_counts_the_line_not_its_crlf(self):
        proto, out, session = self.open()
        out.clear()
        proto.dataReceived(b"12345678\r\n123456789\r\n")
        self.clock.advance(0)
        self.assertEqual(session.lines, ["12345678"])
        self.assertEqual(out.value(), b"! line too long (max 8 bytes)\r\n")


class InputPausingTests(_FakeSessionHarness):
    """pause_input/resume_input: lines wait in order and the socket is not read meanwhile."""

    FIVE = b"line 1\r\nline 2\r\nline 3\r\nline 4\r\nline 5\r\n"

    def test_pause_on_the_second_of_five_lines(self):
        proto, out, session = self.open()
        session.on_line["line 2"] = proto.pause_input
        proto.dataReceived(self.FIVE)
        self.assertEqual(session.lines, ["line 1", "line 2"])
        self.assertEqual(out.producerState, "paused")
        proto.resume_input()
        self.assertEqual(session.lines, [f"line {n}" for n in range(1, 6)])
        self.assertEqual(out.producerState, "producing")

    def test_pause_again_while_resuming(self):
        proto, out, session = self.open()
        session.on_line["line 2"] = proto.pause_input
        session.on_line["line 4"] = proto.pause_input
        proto.dataReceived(self.FIVE)
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1", "line 2", "line 3", "line 4"])
        self.assertEqual(out.producerState, "paused")
        proto.resume_input()
        self.assertEqual(session.lines, [f"line {n}" for n in range(1, 6)])
        self.assertEqual(out.producerState, "producing")

    def test_resume_from_inside_handle(self):
        """A registry that answers at once: pause and resume within one line."""
        proto, out, session = self.open()

        def pause_and_resume():
            proto.pause_input()
            proto.resume_input()

        session.on_line["line 2"] = pause_and_resume
        proto.dataReceived(self.FIVE)
        self.assertEqual(session.lines, [f"line {n}" for n in range(1, 6)])
        self.assertEqual(out.producerState, "producing")

    def test_resume_from_inside_a_later_line_handed_over(self):
        proto, out, session = self.open()
        session.on_line["line 2"] = proto.pause_input
        session.on_line["line 3"] = lambda: (proto.pause_input(), proto.resume_input())
        proto.dataReceived(self.FIVE)
        proto.resume_input()
        self.assertEqual(session.lines, [f"line {n}" for n in range(1, 6)])
        self.assertEqual(out.producerState, "producing")

    def test_resume_from_a_timer(self):
        proto, out, session = self.open()

        def pause_for_a_second():
            proto.pause_input()
            self.clock.callLater(1, proto.resume_input)

        session.on_line["line 1"] = pause_for_a_second
        proto.dataReceived(self.FIVE)
        self.clock.advance(0.9)
        self.assertEqual(session.lines, ["line 1"])
        self.clock.advance(0.1)
        self.assertEqual(len(session.lines), 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reads_while_paused_wait_in_order(self):
        """A transport may still deliver what it had already read (the rest of a TLS record)."""
        proto, out, session = self.open()
        session.on_line["line 1"] = proto.pause_input
        proto.dataReceived(b"line 1\nline 2\nli")
        proto.dataReceived(b"ne 3\nline 4\r")
        proto.dataReceived(b"\nline 5")
        self.assertEqual(session.lines, ["line 1"])
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1", "line 2", "line 3", "line 4"])
        proto.dataReceived(b"\n")
        self.assertEqual(session.lines[-1], "line 5")

    def test_telnet_answered_while_paused(self):
        proto, out, session = self.open()
        out.clear()
        session.on_line["line 1"] = proto.pause_input
        proto.dataReceived(b"line 1\r\nline 2\r\n" + CTRL_C)
        self.assertEqual(out.value(), TM_ANSWER)
        self.assertEqual(session.lines, ["line 1"])
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1", "line 2"])

    def test_interrupt_while_paused_keeps_complete_lines(self):
        proto, out, session = self.open()
        session.on_line["line 1"] = proto.pause_input
        proto.dataReceived(b"line 1\r\nline 2\r\nhalf")
        proto.dataReceived(CTRL_C + b"line 3\r\n")
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1", "line 2", "line 3"])

    def test_output_flows_while_input_is_paused(self):
        """Input pausing stops reading; the send queue (the producer for writing) is untouched."""
        proto, out, session = self.open()
        out.clear()
        proto.pause_input()
        self.assertIsInstance(out.producer, SendQueue)
        self.hub.tell(proto, Notice("hello"))
        self.clock.advance(0)
        self.assertEqual(out.value(), b"* hello\r\n")
        out.producer.pauseProducing()  # the socket's buffer fills, then drains
        out.producer.resumeProducing()
        self.assertEqual(out.producerState, "paused")

    def test_close_while_paused(self):
        proto, out, session = self.open()
        session.on_line["line 1"] = proto.pause_input
        proto.dataReceived(self.FIVE)
        d = proto.close("server shutting down")
        self.assertTrue(out.disconnecting)
        proto.resume_input()  # e.g. the flood timer fires; must not touch the closing transport
        self.assertEqual(session.lines, ["line 1"])
        proto.pause_input()
        self.lose(proto, ConnectionDone)
        self.successResultOf(d)
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1"])

    def test_connection_lost_while_paused(self):
        proto, out, session = self.open()
        session.on_line["line 1"] = proto.pause_input
        proto.dataReceived(self.FIVE)
        self.lose(proto)
        self.assertEqual(session.ended, "connection lost")
        proto.resume_input()
        self.assertEqual(session.lines, ["line 1"])
        self.assertEqual(list(proto._pending), [])

    def test_pause_and_resume_are_idempotent(self):
        proto, out, session = self.open()
        proto.pause_input()
        proto.pause_input()
        self.assertEqual(out.producerState, "paused")
        proto.resume_input()
        proto.resume_input()
        self.assertEqual(out.producerState, "producing")
        proto.dataReceived(b"after\n")
        self.assertEqual(session.lines, ["after"])


class InputPausingLongLineTests(_FakeSessionHarness):
    """While paused, an over-long line is still bounded, and refused in its place."""

    limits = Limits(max_line=10)

    def test_too_long_line_while_paused_refused_in_its_place(self):
        proto, out, session = self.open()
        out.clear()

        def tell_then_pause():
            self.hub.tell(proto, Notice("first"))
            proto.pause_input()

        session.on_line["line 1"] = tell_then_pause
        proto.dataReceived(b"line 1\nline 2\n" + b"x" * 50)
        proto.dataReceived(b"x" * 50)
        self.assertLessEqual(len(proto._buffer), 10)
        proto.dataReceived(b"x\nline 3\n")
        self.clock.advance(0)
        self.assertEqual(out.value(), b"* first\r\n")
        session.on_line["line 2"] = lambda: self.hub.tell(proto, Notice("second"))
        proto.resume_input()
        self.clock.advance(0)
        self.assertEqual(session.lines, ["line 1", "line 2", "line 3"])
        self.assertEqual(
            out.value(), b"* first\r\n* second\r\n! line too long (max 10 bytes)\r\n"
        )


class InputPausingWithSessionTests(_Harness):
    """With the real session, which pauses a sender over the flood rate."""

    limits = Limits(flood=FloodPolicy(rate=10, burst=2))

    def test_a_paste_over_the_rate_loses_no_line(self):
        """What the session holds plus what the protocol holds is every line, in order."""
        (alice, alice_out), (bob, bob_out) = self.connect_all("alice", "bob")
        self.clock.advance(60)
        alice.dataReceived(b"".join(b"l%d\r\n" % n for n in range(8)))
        self.clock.advance(0)
        self.assertEqual(alice_out.producerState, "paused")
        self.clock.pump([0.1] * 20)
        relayed = [line for line in bob_out.value().split(b"\r\n") if line.startswith(b"alice: ")]
        self.assertEqual(relayed, [b"alice: l%d" % n for n in range(8)])
        self.assertEqual(alice_out.producerState, "producing")


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
        self.assertIsNone(self.hub.find("bob"))
        self.assertIsNone(self.registry.holder("bob"))
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual([e.get("nick") for e in warnings], ["bob"])
        # The reactor then reports the aborted connection; nothing more is said.
        self.lose(bob)
        self.assertEqual(carol_out.value().count(b"bob left"), 1)
        self.assertEqual(self.hub.connected, 2)
        self.assertEqual(self.admission.total, 2)

    def test_too_slow_reader_is_not_ended_inside_the_turn(self):
        """
        The overflow happens inside deliver(), while the hub hands out a turn to the
        room's members: the session ends right after, and everyone in the room still
        gets that turn.
        """
        users = self.connect_all("alice", "bob", "carol", "dave")
        (alice, _), (bob, bob_out) = users[:2]
        bob_out.producer.pauseProducing()
        for _ in range(10):
            alice.dataReceived(b"0123456789\n")
            self.clock.advance(0)
        alice.dataReceived(b"0123456789\n")
        self.hub.flush()  # the turn in which bob's backlog overflows
        self.assertTrue(bob_out.disconnecting)
        self.assertIs(self.hub.find("bob"), bob)  # not ended under the hand-out
        for _, out in users[2:]:
            self.assertEqual(out.value(), b"alice: 0123456789\r\n" * 11)
        self.clock.advance(0)
        self.assertIsNone(self.hub.find("bob"))
        for _, out in [users[0]] + users[2:]:
            self.assertTrue(out.value().endswith(b"* bob left (too slow to read)\r\n"))
        self.lose(bob)
        for _, out in [users[0]] + users[2:]:
            self.assertEqual(out.value().count(b"bob left"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_before_the_drop_still_says_too_slow_once(self):
        (alice, alice_out), (bob, bob_out), (carol, carol_out) = self.connect_all(
            "alice", "bob", "carol"
        )
        bob_out.producer.pauseProducing()
        for _ in range(11):
            alice.dataReceived(b"0123456789\n")
            self.hub.flush()
        self.assertTrue(bob_out.disconnecting)
        bob.connectionLost(Failure(ConnectionLost()))  # reported before the next turn
        self.assertIsNone(self.hub.find("bob"))
        self.assertIsNone(self.registry.holder("bob"))
        self.clock.advance(0)
        self.assertEqual(
            carol_out.value(),
            b"alice: 0123456789\r\n" * 11 + b"* bob left (too slow to read)\r\n",
        )
        self.assertEqual(alice_out.value(), b"* bob left (too slow to read)\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
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
        d = self.hub.close_all("server shutting down")
        self.assertEqual(alice_out.value(), b"* server shutting down\r\n")
        self.assertEqual(out.value(), b"* server shutting down\r\n")
        self.assertNoResult(d)
        self.lose(alice, ConnectionDone)
        self.lose(proto, ConnectionDone)
        self.successResultOf(d)


class _GreetingSession(RecordingSession):
    """A L{RecordingSession} that says hello, so the client knows the server side is up."""

    def start(self):
        self.participant.transport.write(b"hello\r\n")


class _GreetingFactory(LineChatFactory):
    def make_session(self, participant):
        return _GreetingSession(participant)


class InputPausingLoopbackTests(TestCase):
    """On a real TCP connection: pausing input stops reading the socket, and only that."""

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.hub = Hub(reactor)
        self.factory = _GreetingFactory(
            self.hub, NickRegistry(), reactor, Admission(10, 10), Limits()
        )
        self.built = []
        build = self.factory.buildProtocol
        self.factory.buildProtocol = lambda addr: self.built.append(build(addr)) or self.built[-1]
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def reading(self, proto):
        """Whether the reactor is reading this connection's socket."""
        return proto.transport in self.reactor.getReaders()

    @defer.inlineCallbacks
    def test_paused_socket_is_not_read_and_output_still_flows(self):
        user = yield support.connect(self.reactor, self.port)
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), "hello")
        [proto] = self.built
        session = proto._session
        paused = defer.Deferred()

        def pause():
            proto.pause_input()
            paused.callback(None)

        session.on_line["line 2"] = pause
        user.send(InputPausingTests.FIVE)
        yield paused.addTimeout(support.WAIT, self.reactor)
        self.assertEqual(session.lines, ["line 1", "line 2"])
        self.assertFalse(self.reading(proto))
        # Output is not input: 500 kB to the user (past Twisted's 64 kB write buffer, so
        # the send queue is paused and resumed) goes out while its input stays paused.
        text = "x" * 1000
        for _ in range(500):
            self.hub.tell(proto, Notice(text))
            self.hub.flush()
        received = yield user.read_lines(500)
        self.assertEqual(received, ["* " + text] * 500)
        self.assertFalse(self.reading(proto))
        self.assertEqual(session.lines, ["line 1", "line 2"])
        proto.resume_input()
        self.assertEqual(session.lines, [f"line {n}" for n in range(1, 6)])
        self.assertTrue(self.reading(proto))
        got_six = defer.Deferred()
        session.on_line["line 6"] = lambda: got_six.callback(None)
        user.send(b"line 6\r\n")
        yield got_six.addTimeout(support.WAIT, self.reactor)
        self.assertEqual(session.lines[-1], "line 6")
