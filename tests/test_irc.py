"""
Tests for L{chatservice.frontends.irc}: IRC clients on the shared core.

Units: each connection is an L{IRCChatProtocol} built by the factory on a
L{StringTransport}; time is a L{Clock}.  The hub hands out what a turn
published at its end (C{clock.callLater(0, ...)}), so every check of output
first runs that turn with C{clock.advance(0)}.  Expected lines follow the
Modern IRC documents (https://modern.ircdocs.horse) and the IRCv3 specs.
"""

import re
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatservice import __version__
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.irc import IRCChatFactory, IRCChatProtocol
from chatservice.frontends.line import LineChatFactory
from tests.fakes import FakeHistory, line_user

SERVER = "irc.test"
#: The clock's time in every test, and how server-time shows it.
NOW = 1700000000.5
STAMP = "2023-11-14T22:13:20.500Z"
#: The numerics of the welcome burst without a MOTD, in order.
WELCOME_NUMERICS = ["001", "002", "003", "004", "005", "251", "254", "255", "422"]


def numeric(line: str) -> str:
    """The command (numeric) of a server line, tags and source skipped."""
    words = line.split(" ")
    if words[0].startswith("@"):
        words = words[1:]
    return words[1] if words[0].startswith(":") else words[0]


class _Harness(SynchronousTestCase):
    """A hub on a Clock, an IRC factory and a line factory sharing it."""

    #: Flood control off: these tests send many lines in one turn.
    limits = Limits(flood=FloodPolicy(rate=0))
    motd: tuple = ()
    store = None

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.registry = NickRegistry()
        self.hub = Hub(self.clock, self.limits, history=self.store, replay=20)
        admission = Admission(0, 0)
        self.factory = IRCChatFactory(self.hub, self.registry, self.clock, admission,
                                      self.limits, server_name=SERVER, motd=self.motd)
        self.lines = LineChatFactory(self.hub, self.registry, self.clock, admission,
                                     self.limits, gate=self.factory.gate)
        self._port = 40000

    def open(self):
        """A new IRC connection that has sent nothing."""
        self._port += 1
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", self._port))
        out = StringTransport()
        proto.makeConnection(out)
        self.clock.advance(0)
        return proto, out

    def send(self, proto, *lines):
        """Each of C{lines} from the client, CRLF-terminated, then the end of the turn."""
        for line in lines:
            proto.dataReceived(line.encode("utf-8") + b"\r\n")
        self.clock.advance(0)

    def read(self, out) -> list:
        """The lines written so far (each checked to end in CRLF), then forgotten."""
        data = out.value()
        out.clear()
        if not data:
            return []
        self.assertTrue(data.endswith(b"\r\n"), data)
        return data[:-2].decode("utf-8").split("\r\n")

    def user(self, nick, caps=""):
        """An IRC user registered as C{nick} (with C{caps} negotiated); output cleared."""
        proto, out = self.open()
        if caps:
            self.send(proto, "CAP LS 302", f"CAP REQ :{caps}")
        self.send(proto, f"NICK {nick}", f"USER {nick} 0 * :Real {nick}")
        if caps:
            self.send(proto, "CAP END")
        self.assertEqual(proto.nick, nick)
        out.clear()
        return proto, out

    def joined(self, room, *users):
        """C{users} (proto, out) all in C{room}; everyone's output cleared."""
        for proto, _ in users:
            self.send(proto, f"JOIN {room}")
        for _, out in users:
            out.clear()

    def line_user(self, nick):
        """A telnet-style user, in #lobby; output cleared."""
        return line_user(self.lines, self.clock, nick)


class RegistrationTests(_Harness):
    """NICK, USER, PASS, CAP, and the welcome burst."""

    def test_protocol_class(self):
        """IRC connections are IRCChatProtocol instances, via irc."""
        proto, _ = self.open()
        self.assertIsInstance(proto, IRCChatProtocol)
        self.assertEqual(proto.via, "irc")

    def test_client_speaks_first(self):
        """Nothing is written on connecting: IRC clients speak first."""
        _, out = self.open()
        self.assertEqual(out.value(), b"")

    def test_register_without_cap(self):
        """NICK and USER register at once: 001-005, LUSERS, then 422."""
        proto, out = self.open()
        self.send(proto, "NICK alice", "USER alice 0 * :Alice A")
        lines = self.read(out)
        self.assertEqual([numeric(line) for line in lines], WELCOME_NUMERICS)
        self.assertEqual(lines[0],
                         f":{SERVER} 001 alice :Welcome to the chatroom IRC network, alice")
        self.assertEqual(lines[-1], f":{SERVER} 422 alice :MOTD File is missing")

    def test_user_before_nick(self):
        """USER then NICK registers too."""
        proto, out = self.open()
        self.send(proto, "USER alice 0 * :Alice", "NICK alice")
        self.assertEqual([numeric(line) for line in self.read(out)], WELCOME_NUMERICS)

    def test_004_lists_modes(self):
        """004: server name, version, user modes i, channel modes nt."""
        proto, out = self.open()
        self.send(proto, "NICK alice", "USER alice 0 * :Alice")
        self.assertEqual(self.read(out)[3],
                         f":{SERVER} 004 alice {SERVER} chatroom-{__version__} i nt")

    def test_005_tokens(self):
        """005 advertises the casemapping, channel types, lengths, network and empty PREFIX."""
        proto, out = self.open()
        self.send(proto, "NICK alice", "USER alice 0 * :Alice")
        line = self.read(out)[4]
        head, _, text = line.partition(" :")
        self.assertEqual(text, "are supported by this server")
        tokens = head.split(" ")
        self.assertEqual(tokens[:3], [f":{SERVER}", "005", "alice"])
        for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=51",
                      "NETWORK=chatroom", "PREFIX="):
            self.assertIn(token, tokens[3:])
        self.assertLessEqual(len(tokens[3:]), 13)

    def test_lusers_in_welcome(self):
        """The welcome's 251 counts the users connected."""
        self.user("bob")
        proto, out = self.open()
        self.send(proto, "NICK alice", "USER alice 0 * :Alice")
        self.assertIn(f":{SERVER} 251 alice :There are 2 users and 0 invisible on 1 servers",
                      self.read(out))

    def test_pass_accepted(self):
        """PASS before NICK/USER is accepted silently."""
        proto, out = self.open()
        self.send(proto, "PASS secret", "NICK alice", "USER alice 0 * :Alice")
        self.assertEqual([numeric(line) for line in self.read(out)], WELCOME_NUMERICS)

    def test_cap_ls(self):
        """CAP LS 302 lists the capabilities, to *."""
        proto, out = self.open()
        self.send(proto, "CAP LS 302")
        self.assertEqual(self.read(out),
                         [f":{SERVER} CAP * LS :batch echo-message message-tags server-time"])

    def test_cap_req_ack(self):
        """CAP REQ of known capabilities is ACKed with the same list."""
        proto, out = self.open()
        self.send(proto, "CAP REQ :server-time echo-message")
        self.assertEqual(self.read(out), [f":{SERVER} CAP * ACK :server-time echo-message"])
        self.assertEqual(proto.caps, {"server-time", "echo-message"})

    def test_registration_waits_for_cap_end(self):
        """Once CAP was used, NICK and USER register only at CAP END."""
        proto, out = self.open()
        self.send(proto, "CAP LS 302", "NICK alice", "USER alice 0 * :Alice",
                  "CAP REQ :server-time echo-message")
        self.assertEqual(self.read(out), [
            f":{SERVER} CAP * LS :batch echo-message message-tags server-time",
            f":{SERVER} CAP * ACK :server-time echo-message",
        ])
        self.assertIsNone(proto.nick)
        self.send(proto, "CAP END")
        self.assertEqual([numeric(line) for line in self.read(out)], WELCOME_NUMERICS)
        self.assertEqual(proto.nick, "alice")

    def test_unknown_cap_nak(self):
        """A REQ naming an unknown capability is NAKed whole; nothing is enabled."""
        proto, out = self.open()
        self.send(proto, "CAP REQ :server-time foo")
        self.assertEqual(self.read(out), [f":{SERVER} CAP * NAK :server-time foo"])
        self.assertEqual(proto.caps, set())

    def test_451_before_registration(self):
        """Commands other than registration, PING and QUIT get 451 before registering."""
        proto, out = self.open()
        self.send(proto, "JOIN #a", "PRIVMSG #a :hi", "WHOIS bob")
        self.assertEqual(self.read(out), [f":{SERVER} 451 * :You have not registered"] * 3)

    def test_ping_before_registration(self):
        """PING is answered before registration."""
        proto, out = self.open()
        self.send(proto, "PING :early")
        self.assertEqual(self.read(out), [f":{SERVER} PONG {SERVER} :early"])

    def test_quit_before_registration(self):
        """QUIT before registration closes with ERROR."""
        proto, out = self.open()
        self.send(proto, "QUIT :bye")
        self.assertEqual(self.read(out), ["ERROR :Closing Link: 127.0.0.1 (Quit: bye)"])
        self.assertTrue(out.disconnecting)

    def test_no_nick_given_431(self):
        """NICK without a parameter: 431."""
        proto, out = self.open()
        self.send(proto, "NICK")
        self.assertEqual(self.read(out), [f":{SERVER} 431 * :No nickname given"])

    def test_erroneous_nick_432(self):
        """A nick breaking the rules at registration: 432 naming it; another then works."""
        proto, out = self.open()
        self.send(proto, "NICK 9lives", "USER x 0 * :X")
        self.assertEqual(self.read(out), [f":{SERVER} 432 * 9lives :Erroneous nickname"])
        self.send(proto, "NICK nine")
        self.assertEqual(numeric(self.read(out)[0]), "001")

    def test_nick_in_use_433(self):
        """A taken nick (any case) at registration: 433 naming it; another then works."""
        self.user("alice")
        proto, out = self.open()
        self.send(proto, "NICK Alice", "USER x 0 * :X")
        self.assertEqual(self.read(out), [f":{SERVER} 433 * Alice :Nickname is already in use"])
        self.send(proto, "NICK alice2")
        self.assertEqual(numeric(self.read(out)[0]), "001")

    def test_not_placed_in_lobby(self):
        """A registered IRC user is in no room, and #lobby hears nothing of it."""
        _, carol_out = self.line_user("carol")
        proto, _ = self.user("alice")
        self.assertEqual(self.hub.rooms_of(proto), [])
        self.assertIsNone(proto.room)
        self.assertEqual(carol_out.value(), b"")


class MotdTests(_Harness):
    """With --motd, the welcome ends with 375/372/376 instead of 422."""

    motd = ("Be nice.", "No spam.")

    def test_motd_in_welcome(self):
        """The message of the day, one 372 per line."""
        proto, out = self.open()
        self.send(proto, "NICK alice", "USER alice 0 * :Alice")
        self.assertEqual(self.read(out)[-4:], [
            f":{SERVER} 375 alice :- {SERVER} Message of the day -",
            f":{SERVER} 372 alice :- Be nice.",
            f":{SERVER} 372 alice :- No spam.",
            f":{SERVER} 376 alice :End of /MOTD command.",
        ])


class CommandTests(_Harness):
    """Commands of a registered user."""

    def test_ping_pong(self):
        """PING <token> -> PONG <server> :<token>."""
        alice, out = self.user("alice")
        self.send(alice, "PING :LAG1234")
        self.assertEqual(self.read(out), [f":{SERVER} PONG {SERVER} :LAG1234"])

    def test_ping_without_token_409(self):
        """PING with no token: 409."""
        alice, out = self.user("alice")
        self.send(alice, "PING")
        self.assertEqual(self.read(out), [f":{SERVER} 409 alice :No origin specified"])

    def test_join_several(self):
        """JOIN #a,#b joins both: JOIN, 353, 366 for each."""
        alice, out = self.user("alice")
        self.send(alice, "JOIN #a,#b")
        self.assertEqual(self.read(out), [
            ":alice!chat@irc.test JOIN #a",
            f":{SERVER} 353 alice = #a :alice",
            f":{SERVER} 366 alice #a :End of /NAMES list.",
            ":alice!chat@irc.test JOIN #b",
            f":{SERVER} 353 alice = #b :alice",
            f":{SERVER} 366 alice #b :End of /NAMES list.",
        ])
        self.assertEqual([room.name for room in self.hub.rooms_of(alice)], ["#a", "#b"])

    def test_join_seen_by_members(self):
        """Members see the joiner's JOIN; the joiner's 353 lists everyone."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out))
        self.send(bob, "JOIN #a")
        self.assertEqual(self.read(alice_out), [":bob!chat@irc.test JOIN #a"])
        self.assertEqual(self.read(bob_out)[1], f":{SERVER} 353 bob = #a :alice bob")

    def test_join_shows_topic(self):
        """Joining a room with a topic shows 332."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out))
        self.send(alice, "TOPIC #a :all about a")
        self.send(bob, "JOIN #a")
        self.assertEqual(self.read(bob_out)[:2], [
            ":bob!chat@irc.test JOIN #a", f":{SERVER} 332 bob #a :all about a"])

    def test_join_0_parts_all(self):
        """JOIN 0 parts every room."""
        alice, out = self.user("alice")
        self.joined("#a", (alice, out))
        self.send(alice, "JOIN #b")
        out.clear()
        self.send(alice, "JOIN 0")
        self.assertEqual(self.read(out), [":alice!chat@irc.test PART #a",
                                          ":alice!chat@irc.test PART #b"])
        self.assertEqual(self.hub.rooms_of(alice), [])

    def test_part_seen_by_members(self):
        """PART with a reason: the other members see it with the reason."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(alice, "PART #a :bye now")
        self.assertEqual(self.read(bob_out), [":alice!chat@irc.test PART #a :bye now"])
        self.assertEqual(self.hub.rooms_of(alice), [])

    def test_part_own_line_has_reason(self):
        """The parting user's own PART carries its reason too, as everyone else's does."""
        alice, alice_out = self.user("alice")
        self.joined("#a", (alice, alice_out))
        self.send(alice, "PART #a :bye now")
        self.assertEqual(self.read(alice_out), [":alice!chat@irc.test PART #a :bye now"])

    def test_part_no_such_channel_403(self):
        """PART of a room that does not exist: 403."""
        alice, out = self.user("alice")
        self.send(alice, "PART #nowhere")
        self.assertEqual(self.read(out), [f":{SERVER} 403 alice #nowhere :No such channel"])

    def test_part_not_on_channel_442(self):
        """PART of an existing room one is not in: 442 naming it."""
        alice, out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (bob, bob_out))
        self.send(alice, "PART #a")
        self.assertEqual(self.read(out), [f":{SERVER} 442 alice #a :You're not on that channel"])

    def test_nick_change(self):
        """NICK: the user and its rooms see :old!... NICK new."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(alice, "NICK alicia")
        self.assertEqual(self.read(alice_out), [":alice!chat@irc.test NICK alicia"])
        self.assertEqual(self.read(bob_out), [":alice!chat@irc.test NICK alicia"])
        self.assertEqual(alice.nick, "alicia")

    def test_nick_case_only_change(self):
        """NICK to the same nick in other case works."""
        alice, out = self.user("alice")
        self.send(alice, "NICK ALICE")
        self.assertEqual(self.read(out), [":alice!chat@irc.test NICK ALICE"])
        self.assertEqual(alice.nick, "ALICE")
        self.assertIs(self.hub.find("alice"), alice)

    def test_nick_431(self):
        """NICK without a parameter once registered: 431."""
        alice, out = self.user("alice")
        self.send(alice, "NICK")
        self.assertEqual(self.read(out), [f":{SERVER} 431 alice :No nickname given"])

    def test_nick_432(self):
        """NICK to a nick breaking the rules: 432 naming it."""
        alice, out = self.user("alice")
        self.send(alice, "NICK 9lives")
        self.assertEqual(self.read(out), [f":{SERVER} 432 alice 9lives :Erroneous nickname"])
        self.assertEqual(alice.nick, "alice")

    def test_nick_433(self):
        """NICK to a taken nick: 433 naming it."""
        alice, out = self.user("alice")
        self.user("bob")
        self.send(alice, "NICK Bob")
        self.assertEqual(self.read(out),
                         [f":{SERVER} 433 alice Bob :Nickname is already in use"])
        self.assertEqual(alice.nick, "alice")

    def test_quit_answered_with_error(self):
        """QUIT :reason is answered with ERROR :Closing Link: HOST (Quit: reason), then closed."""
        alice, out = self.user("alice")
        self.send(alice, "QUIT :bye")
        self.assertEqual(self.read(out), ["ERROR :Closing Link: 127.0.0.1 (Quit: bye)"])
        self.assertTrue(out.disconnecting)

    def test_quit_seen_by_members(self):
        """Members see :nick!... QUIT :Quit: reason; the nick is free again."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(alice, "QUIT :bye")
        self.assertEqual(self.read(bob_out), [":alice!chat@irc.test QUIT :Quit: bye"])
        self.assertIsNone(self.hub.find("alice"))

    def test_unknown_command_421(self):
        """An unknown command: 421 naming it."""
        alice, out = self.user("alice")
        self.send(alice, "FROB x")
        self.assertEqual(self.read(out), [f":{SERVER} 421 alice FROB :Unknown command"])

    def test_too_long_417_then_usable(self):
        """A message part over 512 bytes: 417, nothing relayed, the next PING answered."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(alice, "PRIVMSG #a :" + "x" * 600, "PING :after")
        self.assertEqual(self.read(alice_out), [f":{SERVER} 417 alice :Input line was too long",
                                                f":{SERVER} PONG {SERVER} :after"])
        self.assertEqual(self.read(bob_out), [])
        self.assertFalse(alice_out.disconnecting)

    def test_huge_line_417_then_usable(self):
        """A line longer than the whole read limit: 417, its rest skipped, the next line read."""
        alice, out = self.user("alice")
        alice.dataReceived(b"PRIVMSG #a :" + b"y" * 20000 + b"\r\nPING :after\r\n")
        self.clock.advance(0)
        self.assertEqual(self.read(out), [f":{SERVER} 417 alice :Input line was too long",
                                          f":{SERVER} PONG {SERVER} :after"])

    def test_line_of_512_bytes_accepted(self):
        """A message of exactly 512 bytes with its CRLF is not too long."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        text = "z" * (510 - len("PRIVMSG #a :"))
        self.send(alice, "PRIVMSG #a :" + text)
        self.assertEqual(self.read(alice_out), [])
        self.assertEqual(len(self.read(bob_out)), 2)  # split so no line passes 512 bytes


class MessageTests(_Harness):
    """PRIVMSG and NOTICE, to rooms and nicks, and their errors."""

    def setUp(self):
        super().setUp()
        self.alice, self.alice_out = self.user("alice")
        self.bob, self.bob_out = self.user("bob")

    def test_privmsg_channel(self):
        """PRIVMSG #room reaches the other members, not the sender."""
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out))
        self.send(self.alice, "PRIVMSG #a :hello there")
        self.assertEqual(self.read(self.bob_out), [":alice!chat@irc.test PRIVMSG #a :hello there"])
        self.assertEqual(self.read(self.alice_out), [])

    def test_privmsg_nick(self):
        """PRIVMSG nick reaches that user alone, in any case."""
        self.send(self.alice, "PRIVMSG BOB :psst")
        self.assertEqual(self.read(self.bob_out), [":alice!chat@irc.test PRIVMSG bob :psst"])
        self.assertEqual(self.read(self.alice_out), [])

    def test_privmsg_no_such_nick_401(self):
        """PRIVMSG to nobody: 401."""
        self.send(self.alice, "PRIVMSG nobody :hi")
        self.assertEqual(self.read(self.alice_out),
                         [f":{SERVER} 401 alice nobody :No such nick/channel"])

    def test_privmsg_no_such_channel_403(self):
        """PRIVMSG to a room that does not exist: 403."""
        self.send(self.alice, "PRIVMSG #nowhere :hi")
        self.assertEqual(self.read(self.alice_out),
                         [f":{SERVER} 403 alice #nowhere :No such channel"])

    def test_privmsg_not_joined_404(self):
        """PRIVMSG to an existing room one is not in: 404 naming it, nothing relayed."""
        self.joined("#a", (self.bob, self.bob_out))
        self.send(self.alice, "PRIVMSG #a :hi")
        self.assertEqual(self.read(self.alice_out),
                         [f":{SERVER} 404 alice #a :Cannot send to channel"])
        self.assertEqual(self.read(self.bob_out), [])

    def test_privmsg_no_recipient_411(self):
        """PRIVMSG without a target: 411."""
        self.send(self.alice, "PRIVMSG")
        self.assertEqual(self.read(self.alice_out),
                         [f":{SERVER} 411 alice :No recipient given (PRIVMSG)"])

    def test_privmsg_no_text_412(self):
        """PRIVMSG without text: 412."""
        self.send(self.alice, "PRIVMSG bob", "PRIVMSG bob :")
        self.assertEqual(self.read(self.alice_out), [f":{SERVER} 412 alice :No text to send"] * 2)

    def test_privmsg_to_away_user_301(self):
        """PRIVMSG to an away user: it is delivered, and the sender gets 301 with the away text."""
        self.send(self.bob, "AWAY :at lunch")
        self.bob_out.clear()
        self.send(self.alice, "PRIVMSG bob :are you there?")
        self.assertEqual(self.read(self.alice_out), [f":{SERVER} 301 alice bob :at lunch"])
        self.assertEqual(self.read(self.bob_out),
                         [":alice!chat@irc.test PRIVMSG bob :are you there?"])

    def test_notice_never_answered(self):
        """NOTICE gets no error reply, whatever is wrong with it."""
        self.joined("#a", (self.bob, self.bob_out))
        self.send(self.alice, "NOTICE nobody :x", "NOTICE #nowhere :x", "NOTICE #a :x",
                  "NOTICE", "NOTICE bob", "NOTICE bob :")
        self.assertEqual(self.read(self.alice_out), [])
        self.assertEqual(self.read(self.bob_out), [])

    def test_notice_to_channel_relayed_as_notice(self):
        """NOTICE #room reaches the members as a NOTICE (bots must not answer it)."""
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out))
        self.send(self.alice, "NOTICE #a :heads up")
        self.assertEqual(self.read(self.bob_out), [":alice!chat@irc.test NOTICE #a :heads up"])

    def test_notice_to_nick_relayed_as_notice(self):
        """NOTICE nick reaches that user as a NOTICE."""
        self.send(self.alice, "NOTICE bob :heads up")
        self.assertEqual(self.read(self.bob_out), [":alice!chat@irc.test NOTICE bob :heads up"])

    def test_ctcp_action_to_channel(self):
        """CTCP ACTION to a room reaches IRC members as the same CTCP ACTION."""
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out))
        self.send(self.alice, "PRIVMSG #a :\x01ACTION waves\x01")
        self.assertEqual(self.read(self.bob_out),
                         [":alice!chat@irc.test PRIVMSG #a :\x01ACTION waves\x01"])

    def test_ctcp_action_to_nick(self):
        """CTCP ACTION to a nick reaches an IRC user as the same CTCP ACTION."""
        self.send(self.alice, "PRIVMSG bob :\x01ACTION waves\x01")
        self.assertEqual(self.read(self.bob_out),
                         [":alice!chat@irc.test PRIVMSG bob :\x01ACTION waves\x01"])

    def test_long_message_split_under_512(self):
        """A relayed line longer than fits is split: every line at most 512 bytes, text intact."""
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out))
        text = "é" * 240  # 480 bytes
        self.send(self.alice, "PRIVMSG #a :" + text)
        lines = self.read(self.bob_out)
        self.assertGreater(len(lines), 1)
        head = ":alice!chat@irc.test PRIVMSG #a :"
        for line in lines:
            self.assertLessEqual(len(line.encode()) + 2, 512)
            self.assertTrue(line.startswith(head), line)
        self.assertEqual("".join(line[len(head):] for line in lines), text)


class CapabilityTests(_Harness):
    """server-time and echo-message."""

    def test_server_time_tag(self):
        """With server-time, others' lines carry @time= in UTC with milliseconds."""
        alice, alice_out = self.user("alice", "server-time")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(bob, "PRIVMSG #a :hi")
        self.assertEqual(self.read(alice_out),
                         [f"@time={STAMP} :bob!chat@irc.test PRIVMSG #a :hi"])

    def test_no_tags_without_server_time(self):
        """Without server-time, no tags at all."""
        alice, alice_out = self.user("alice")
        bob, bob_out = self.user("bob", "server-time")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(bob, "PRIVMSG #a :hi")
        self.assertEqual(self.read(alice_out), [":bob!chat@irc.test PRIVMSG #a :hi"])

    def test_echo_message_channel(self):
        """With echo-message the sender sees its own PRIVMSG to a room."""
        alice, alice_out = self.user("alice", "echo-message")
        bob, bob_out = self.user("bob")
        self.joined("#a", (alice, alice_out), (bob, bob_out))
        self.send(alice, "PRIVMSG #a :hi")
        self.assertEqual(self.read(alice_out), [":alice!chat@irc.test PRIVMSG #a :hi"])
        self.assertEqual(self.read(bob_out), [":alice!chat@irc.test PRIVMSG #a :hi"])

    def test_echo_message_private(self):
        """With echo-message the sender sees its own PRIVMSG to a nick."""
        alice, alice_out = self.user("alice", "echo-message")
        self.user("bob")
        self.send(alice, "PRIVMSG bob :psst")
        self.assertEqual(self.read(alice_out), [":alice!chat@irc.test PRIVMSG bob :psst"])


class LineUserTests(_Harness):
    """IRC users and telnet-style users in the same rooms."""

    def setUp(self):
        super().setUp()
        self.carol, self.carol_out = self.line_user("carol")
        self.alice, self.alice_out = self.user("alice")
        self.send(self.alice, "JOIN #lobby")
        self.alice_out.clear()
        self.carol_out.clear()

    def test_line_user_to_irc(self):
        """A line in #lobby from a line user reaches the IRC user as PRIVMSG."""
        self.carol.dataReceived(b"hello irc\r\n")
        self.clock.advance(0)
        self.assertEqual(self.read(self.alice_out),
                         [f":carol!chat@{SERVER} PRIVMSG #lobby :hello irc"])

    def test_irc_to_line_user(self):
        """An IRC user's PRIVMSG #lobby reaches the line user as nick: text."""
        self.send(self.alice, "PRIVMSG #lobby :hello line")
        self.assertEqual(self.carol_out.value(), b"alice: hello line\r\n")

    def test_irc_join_seen_by_line_user(self):
        """The line user sees an IRC user's JOIN of #lobby as '* nick joined'."""
        bob, _ = self.user("bob")
        self.send(bob, "JOIN #lobby")
        self.assertEqual(self.carol_out.value(), b"* bob joined\r\n")

    def test_action_line_to_irc(self):
        """/me from a line user reaches the IRC user as CTCP ACTION."""
        self.carol.dataReceived(b"/me waves\r\n")
        self.clock.advance(0)
        self.assertEqual(self.read(self.alice_out),
                         [f":carol!chat@{SERVER} PRIVMSG #lobby :\x01ACTION waves\x01"])

    def test_action_irc_to_line(self):
        """CTCP ACTION from an IRC user reaches the line user as '* nick text'."""
        self.send(self.alice, "PRIVMSG #lobby :\x01ACTION dances\x01")
        self.assertEqual(self.carol_out.value(), b"* alice dances\r\n")

    def test_private_both_ways(self):
        """/msg from a line user is a PRIVMSG to the nick; PRIVMSG nick reaches the line user."""
        self.carol.dataReceived(b"/msg alice psst\r\n")
        self.clock.advance(0)
        self.assertEqual(self.read(self.alice_out), [f":carol!chat@{SERVER} PRIVMSG alice :psst"])
        self.carol_out.clear()
        self.send(self.alice, "PRIVMSG carol :hi back")
        self.assertEqual(self.carol_out.value(), b"[private] alice: hi back\r\n")


class NamesTests(_Harness):
    """NAMES, split so no line passes 512 bytes."""

    def test_names_split_under_512(self):
        """Forty 32-character nicks: several 353 lines, each at most 512 bytes, all nicks once."""
        nicks = [f"n{i:02d}" + "x" * 29 for i in range(40)]
        for nick in nicks:
            self.line_user(nick)
        me = "a" * 32
        alice, out = self.user(me)
        for command in ("JOIN #lobby", "NAMES #lobby"):
            self.send(alice, command)
            lines = self.read(out)
            if command.startswith("JOIN"):
                lines = lines[1:]
            self.assertEqual(lines[-1], f":{SERVER} 366 {me} #lobby :End of /NAMES list.")
            replies = lines[:-1]
            self.assertGreater(len(replies), 1)
            head = f":{SERVER} 353 {me} = #lobby :"
            listed = []
            for line in replies:
                self.assertLessEqual(len(line.encode()) + 2, 512)
                self.assertTrue(line.startswith(head), line)
                listed += line[len(head):].split(" ")
            self.assertEqual(listed, nicks + [me])

    def test_names_unknown_channel(self):
        """NAMES of a room that does not exist: just 366."""
        alice, out = self.user("alice")
        self.send(alice, "NAMES #nowhere")
        self.assertEqual(self.read(out), [f":{SERVER} 366 alice #nowhere :End of /NAMES list."])


class QueryTests(_Harness):
    """WHO, WHOIS, LIST, TOPIC, MODE, AWAY, USERHOST, ISON, LUSERS."""

    def setUp(self):
        super().setUp()
        self.alice, self.alice_out = self.user("alice")
        self.bob, self.bob_out = self.user("bob")
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out))

    def ask(self, *lines):
        """What alice is answered for C{lines}."""
        self.send(self.alice, *lines)
        return self.read(self.alice_out)

    def test_who(self):
        """WHO #room: one 352 per member, then 315."""
        self.assertEqual(self.ask("WHO #a"), [
            f":{SERVER} 352 alice #a chat {SERVER} {SERVER} alice H :0 alice (irc)",
            f":{SERVER} 352 alice #a chat {SERVER} {SERVER} bob H :0 bob (irc)",
            f":{SERVER} 315 alice #a :End of WHO list",
        ])

    def test_whois(self):
        """WHOIS nick: 311, 319, 312, 318."""
        self.assertEqual(self.ask("WHOIS bob"), [
            f":{SERVER} 311 alice bob chat {SERVER} * :bob (irc)",
            f":{SERVER} 319 alice bob :#a",
            f":{SERVER} 312 alice bob {SERVER} :chatroom",
            f":{SERVER} 318 alice bob :End of /WHOIS list.",
        ])

    def test_whois_unknown(self):
        """WHOIS of nobody: 401, then 318."""
        self.assertEqual(self.ask("WHOIS nobody"), [
            f":{SERVER} 401 alice nobody :No such nick/channel",
            f":{SERVER} 318 alice nobody :End of /WHOIS list.",
        ])

    def test_list(self):
        """LIST: one 322 per room with count and topic, then 323."""
        self.send(self.alice, "TOPIC #a :about a")
        self.alice_out.clear()
        self.assertEqual(self.ask("LIST"), [
            f":{SERVER} 322 alice #a 2 :about a",
            f":{SERVER} 322 alice #lobby 0 :",
            f":{SERVER} 323 alice :End of /LIST",
        ])

    def test_topic(self):
        """TOPIC: 331 unset; setting it is seen by all members; then 332 and 333."""
        self.assertEqual(self.ask("TOPIC #a"), [f":{SERVER} 331 alice #a :No topic is set"])
        self.assertEqual(self.ask("TOPIC #a :new topic"),
                         [":alice!chat@irc.test TOPIC #a :new topic"])
        self.assertEqual(self.read(self.bob_out), [":alice!chat@irc.test TOPIC #a :new topic"])
        self.assertEqual(self.ask("TOPIC #a"), [
            f":{SERVER} 332 alice #a :new topic",
            f":{SERVER} 333 alice #a alice {int(NOW)}",
        ])

    def test_mode_channel_324(self):
        """MODE #room: 324 with +nt."""
        self.assertEqual(self.ask("MODE #a"), [f":{SERVER} 324 alice #a +nt"])

    def test_mode_ban_list_368(self):
        """MODE #room b (the ban list): just 368."""
        self.assertEqual(self.ask("MODE #a b"),
                         [f":{SERVER} 368 alice #a :End of channel ban list"])

    def test_user_mode_i(self):
        """MODE nick +i is echoed back; MODE nick then shows 221 +i."""
        self.assertEqual(self.ask("MODE alice +i"), [":alice!chat@irc.test MODE alice :+i"])
        self.assertEqual(self.ask("MODE alice"), [f":{SERVER} 221 alice +i"])

    def test_away(self):
        """AWAY :text -> 306 (WHO shows G); AWAY -> 305."""
        self.assertEqual(self.ask("AWAY :lunch"),
                         [f":{SERVER} 306 alice :You have been marked as being away"])
        self.assertIn(f":{SERVER} 352 alice #a chat {SERVER} {SERVER} alice G :0 alice (irc)",
                      self.ask("WHO #a"))
        self.assertEqual(self.ask("AWAY"),
                         [f":{SERVER} 305 alice :You are no longer marked as being away"])

    def test_userhost(self):
        """USERHOST: nick=+user@host per known nick, - when away."""
        self.send(self.bob, "AWAY :gone")
        self.assertEqual(self.ask("USERHOST alice bob nobody"),
                         [f":{SERVER} 302 alice :alice=+chat@{SERVER} bob=-chat@{SERVER}"])

    def test_ison(self):
        """ISON: the nicks online, as registered."""
        self.assertEqual(self.ask("ISON BOB nobody"), [f":{SERVER} 303 alice :bob"])

    def test_lusers(self):
        """LUSERS: 251 counts users; 254 rooms; 255 clients."""
        self.assertEqual(self.ask("LUSERS"), [
            f":{SERVER} 251 alice :There are 2 users and 0 invisible on 1 servers",
            f":{SERVER} 254 alice 2 :channels formed",
            f":{SERVER} 255 alice :I have 2 clients and 0 servers",
        ])


class HistoryTests(_Harness):
    """Replay on JOIN, as the capabilities allow."""

    def setUp(self):
        self.store = FakeHistory("now")
        super().setUp()
        self.carol, _ = self.line_user("carol")
        self.carol.dataReceived(b"old one\r\n/me old two\r\n")
        self.clock.advance(0)

    def join_lobby(self, caps):
        """An IRC user with C{caps} joins #lobby; the lines after its JOIN and NAMES."""
        alice, self.alice_out = self.user("alice", caps)
        self.send(alice, "JOIN #lobby")
        self.clock.advance(0)
        lines = self.read(self.alice_out)
        self.assertEqual(lines[:3], [
            ":alice!chat@irc.test JOIN #lobby",
            f":{SERVER} 353 alice = #lobby :carol alice",
            f":{SERVER} 366 alice #lobby :End of /NAMES list.",
        ])
        return lines[3:]

    def test_server_time(self):
        """With server-time: PRIVMSG with the original @time, no batch."""
        self.assertEqual(self.join_lobby("server-time"), [
            f"@time={STAMP} :carol!chat@{SERVER} PRIVMSG #lobby :old one",
            f"@time={STAMP} :carol!chat@{SERVER} PRIVMSG #lobby :\x01ACTION old two\x01",
        ])

    def test_batch(self):
        """With server-time and batch: the lines inside BATCH +id chathistory #room ... -id."""
        lines = self.join_lobby("server-time batch")
        match = re.fullmatch(rf":{SERVER} BATCH \+(\S+) chathistory #lobby", lines[0])
        self.assertIsNotNone(match, lines[0])
        ref = match.group(1)
        self.assertEqual(lines[1:], [
            f"@batch={ref};time={STAMP} :carol!chat@{SERVER} PRIVMSG #lobby :old one",
            f"@batch={ref};time={STAMP} :carol!chat@{SERVER} PRIVMSG #lobby "
            ":\x01ACTION old two\x01",
            f":{SERVER} BATCH -{ref}",
        ])

    def test_without_server_time(self):
        """Without server-time: NOTICEs from the server with the time in the text."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(NOW))
        self.assertEqual(self.join_lobby(""), [
            f":{SERVER} NOTICE #lobby :[{when}] <carol> old one",
            f":{SERVER} NOTICE #lobby :[{when}] * carol old two",
        ])

    def test_live_lines_after_replay(self):
        """A live line after the replay comes after it, once."""
        lines = self.join_lobby("server-time")
        self.assertEqual(len(lines), 2)
        self.carol.dataReceived(b"live\r\n")
        self.clock.advance(0)
        self.assertEqual(self.read(self.alice_out),
                         [f"@time={STAMP} :carol!chat@{SERVER} PRIVMSG #lobby :live"])


class ShutdownTests(_Harness):
    """Closing every session (the service's stop) says ERROR before hanging up."""

    def test_close_all(self):
        """Registered and unregistered IRC users get ERROR ... (server shutting down)."""
        alice, alice_out = self.user("alice")
        self.joined("#a", (alice, alice_out))
        waiting, waiting_out = self.open()
        self.hub.close_all("server shutting down")
        self.clock.advance(0)
        for out in (alice_out, waiting_out):
            self.assertEqual(self.read(out),
                             ["ERROR :Closing Link: 127.0.0.1 (server shutting down)"])
            self.assertTrue(out.disconnecting)


class MessageTagsTests(_Harness):
    """IRCv3 message-tags: msgid on every message, client-only tags relayed, TAGMSG, 417."""

    def setUp(self):
        super().setUp()
        self.alice, self.alice_out = self.user("alice", "message-tags echo-message")
        self.bob, self.bob_out = self.user("bob", "message-tags")
        self.carol, self.carol_out = self.user("carol")
        self.joined("#a", (self.alice, self.alice_out), (self.bob, self.bob_out),
                    (self.carol, self.carol_out))

    def test_client_tags_and_msgid_relayed(self):
        """A PRIVMSG's +tags reach message-tags clients with a msgid; others get the bare line."""
        tom, tom_out = self.line_user("tom")
        tom.dataReceived(b"/join #a\n")
        self.clock.advance(0)
        for out in (tom_out, self.alice_out, self.bob_out, self.carol_out):
            out.clear()
        self.send(self.alice, "@+draft/reply=42;+x=a\\sb;other=dropped PRIVMSG #a :hi")
        [to_bob] = self.read(self.bob_out)
        tags, rest = to_bob.split(" ", 1)
        self.assertEqual(rest, ":alice!chat@irc.test PRIVMSG #a :hi")
        fields = dict(item.partition("=")[::2] for item in tags[1:].split(";"))
        self.assertEqual(fields["+draft/reply"], "42")
        self.assertEqual(fields["+x"], "a\\sb")
        self.assertNotIn("other", fields)
        self.assertTrue(fields["msgid"].isdigit())
        self.assertEqual(self.read(self.carol_out), [":alice!chat@irc.test PRIVMSG #a :hi"])
        self.assertEqual(tom_out.value(), b"alice: hi\r\n")
        [echo] = self.read(self.alice_out)  # echo-message: the same message, same msgid
        self.assertEqual(echo, to_bob)

    def test_tagmsg_reaches_only_message_tags_clients(self):
        """TAGMSG #room: to message-tags members (and the sender's echo); nothing to others."""
        tom, tom_out = self.line_user("tom")
        tom.dataReceived(b"/join #a\n")
        self.clock.advance(0)
        for out in (tom_out, self.alice_out, self.bob_out, self.carol_out):
            out.clear()
        self.send(self.alice, "@+typing=active TAGMSG #a")
        [to_bob] = self.read(self.bob_out)
        self.assertTrue(to_bob.startswith("@"))
        self.assertIn("+typing=active", to_bob)
        self.assertTrue(to_bob.endswith(" :alice!chat@irc.test TAGMSG #a"))
        self.assertEqual(self.read(self.carol_out), [])
        self.assertEqual(tom_out.value(), b"")
        self.assertEqual(self.read(self.alice_out), [to_bob])

    def test_tagmsg_to_a_nick(self):
        """TAGMSG nick reaches that user; to nobody it is 401."""
        self.send(self.alice, "@+typing=paused TAGMSG bob", "@+typing=paused TAGMSG nobody")
        [to_bob] = self.read(self.bob_out)
        self.assertTrue(to_bob.endswith(" :alice!chat@irc.test TAGMSG bob"))
        self.assertEqual(self.read(self.alice_out)[-1],
                         f":{SERVER} 401 alice nobody :No such nick/channel")

    def test_client_tags_over_4094_bytes_417(self):
        """More than 4094 bytes of client tags: 417, and the connection goes on."""
        self.send(self.alice, "@+big=" + "v" * 4094 + " PRIVMSG #a :hi", "PING :still")
        self.assertEqual(self.read(self.alice_out),
                         [f":{SERVER} 417 alice :Input line was too long",
                          f":{SERVER} PONG {SERVER} :still"])
        self.assertEqual(self.read(self.bob_out), [])

    def test_without_message_tags_no_client_tags_sent(self):
        """A client without message-tags cannot send client tags: they are dropped."""
        self.send(self.carol, "@+x=1 PRIVMSG #a :plain")
        [to_bob] = self.read(self.bob_out)
        self.assertNotIn("+x", to_bob)
        self.assertIn("msgid=", to_bob)
