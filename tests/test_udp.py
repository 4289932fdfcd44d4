"""The UDP side: challenge, join, session secret, reliable lines, expiry, shutdown, limits."""

import re

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chatservice.core.commands import HELP_LINES
from chatservice.core.errors import InvalidNick
from chatservice.core.events import Left
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.interfaces import IParticipant
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry, validate
from chatservice.frontends.reliable import HEADER_ROOM, AckFrame, DataFrame, encode_ack, parse_frame
from chatservice.core.session import REGISTRY_TIMEOUT
from chatservice.frontends.line import LineChatFactory
from chatservice.frontends.udp import MAX_DATAGRAM, DatagramChat
from tests.fakes import DeferredRegistry, RecordingSink, line_user

ALICE = ("127.0.0.1", 40001)
BOB = ("127.0.0.1", 40002)
MALLORY = ("127.0.0.1", 40666)
SESSION = re.compile(rb"SESSION ([0-9a-f]{16})\Z")
#: C{"<s> "}: 16 hex digits and a space, in front of every datagram of a session.
SECRET_AND_SPACE = 17


class FakeDatagramTransport:
    """Records (datagram, address) for every write."""

    def __init__(self):
        self.written = []

    def write(self, datagram, address):
        self.written.append((datagram, address))

    def take(self, address):
        """Datagrams sent to C{address} since the last take, newline stripped."""
        mine = [d.rstrip(b"\n") for d, a in self.written if a == address]
        self.written = [(d, a) for d, a in self.written if a != address]
        return mine


class UdpTestMixin:
    def setUp(self):
        self.clock = Clock()
        self.limits = Limits(flood=FloodPolicy(rate=0), udp_timeout=60.0)
        self.registry = NickRegistry()
        self.hub = Hub(self.clock)
        self.admission = Admission(self.limits.max_clients, self.limits.max_per_ip)
        self.make_chat()

    def make_chat(self):
        """(Re)build the UDP side from the test's hub, registry, admission and limits."""
        self.chat = DatagramChat(
            self.hub, self.registry, self.clock, self.admission, self.limits, secret=b"k"
        )
        self.wire = FakeDatagramTransport()
        self.chat.makeConnection(self.wire)
        self.secrets = {}

    def receive(self, datagram, address=ALICE):
        """C{datagram} arrives from C{address} exactly as given (no secret added)."""
        self.chat.datagramReceived(datagram, address)
        self.clock.advance(0)

    def say(self, frame, address=ALICE):
        """C{frame} arrives from C{address} after that address's session secret, as clients send."""
        self.receive(self.secrets[address] + b" " + frame, address)

    def got(self, address=ALICE):
        """
        What the server sent C{address} since the last take, each with its session secret
        removed: once the address has a secret, every datagram must start with it and a space
        (only a repeated C{SESSION s} itself goes without).  Before that, as sent.
        """
        datagrams = self.wire.take(address)
        secret = self.secrets.get(address)
        if secret is None:
            return datagrams
        frames = []
        for datagram in datagrams:
            if datagram == b"SESSION " + secret:
                frames.append(datagram)
                continue
            self.assertTrue(datagram.startswith(secret + b" "), datagram)
            frames.append(datagram[len(secret) + 1:])
        return frames

    def token(self, address=ALICE):
        """HELLO, and the token the server answers with."""
        self.receive(b"HELLO there", address)
        (reply,) = self.wire.take(address)
        return reply.split()[1]

    def try_join(self, nick=b"alice", address=ALICE):
        """HELLO, TOKEN, JOIN; return every datagram the server sent back to the JOIN."""
        token = self.token(address)
        self.receive(b"JOIN " + token + b" " + nick, address)
        return self.wire.take(address)

    def join(self, nick=b"alice", address=ALICE):
        """Join; check SESSION comes first and keep its secret; return the numbered lines."""
        token = self.token(address)
        self.receive(b"JOIN " + token + b" " + nick, address)
        datagrams = self.wire.take(address)
        match = SESSION.match(datagrams[0]) if datagrams else None
        self.assertIsNotNone(match, datagrams)
        secret = self.secrets[address] = match.group(1)
        self.assertTrue(all(d.startswith(secret + b" ") for d in datagrams[1:]), datagrams)
        data = [parse_frame(d[len(secret) + 1:]) for d in datagrams[1:]]
        self.assertTrue(all(isinstance(f, DataFrame) for f in data), datagrams)
        self.ack(data, address)
        return [f.payload.decode() for f in data]

    def ack(self, frames, address=ALICE):
        """Acknowledge the highest of C{frames} (cumulatively), with the secret."""
        if frames:
            self.say(encode_ack(max(f.seq for f in frames)), address)

    def lines(self, address=ALICE, ack=True):
        """Data lines sent to C{address}; ACK them all (cumulatively) if C{ack}."""
        frames = [parse_frame(d) for d in self.got(address)]
        data = [f for f in frames if isinstance(f, DataFrame)]
        if ack:
            self.ack(data, address)
        return [f.payload.decode() for f in data]

    def assert_nothing_left(self, address=ALICE, admitted=0):
        """No peer, no admission slot, no timer, and no datagram ever again to C{address}."""
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(self.admission.total, admitted)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(120)
        self.assertEqual(self.wire.take(address), [])

    def tcp_user(self, nick):
        factory = LineChatFactory(self.hub, self.registry, self.clock, self.admission, self.limits)
        return line_user(factory, self.clock, nick, host="127.0.0.9")


class ChallengeTests(UdpTestMixin, SynchronousTestCase):
    def test_hello_gets_a_small_token(self):
        """HELLO gets TOKEN, never more than three times the request's bytes."""
        self.chat.datagramReceived(b"HELLO\n", ALICE)
        [(reply, address)] = self.wire.written
        self.assertEqual(address, ALICE)
        self.assertTrue(reply.startswith(b"TOKEN "))
        self.assertLessEqual(len(reply), 3 * len(b"HELLO\n"))

    def test_tiny_hello_gets_nothing(self):
        """A request too small to answer within the 3x rule is not answered."""
        self.chat.datagramReceived(b"HELLO", ALICE)
        self.assertEqual(self.wire.written, [])

    def test_strangers_get_nothing_else(self):
        """Data, ACKs, PINGs, garbage and bad tokens from unjoined addresses get no reply."""
        for datagram in [b"1 hi", b"ACK 3", b"PING", b"\xff\x00garbage", b"", b"JOIN 0000000000 mallory",
                         b"JOIN", b"/who", b"x" * 5000]:
            self.chat.datagramReceived(datagram, MALLORY)
        self.clock.advance(0)
        self.assertEqual(self.wire.written, [])
        self.assertEqual(self.hub.connected, 0)

    def test_token_is_bound_to_the_address(self):
        """A token fetched for one address does not admit another."""
        self.chat.datagramReceived(b"HELLO alice", ALICE)
        token = self.got(ALICE)[0].split()[1]
        self.receive(b"JOIN " + token + b" mallory", MALLORY)
        self.assertEqual(self.wire.written, [])
        self.assertIsNone(self.registry.holder("mallory"))

    def test_token_expires(self):
        """A token older than two epochs is refused."""
        self.chat.datagramReceived(b"HELLO alice", ALICE)
        token = self.got(ALICE)[0].split()[1]
        self.clock.advance(200)
        self.receive(b"JOIN " + token + b" alice")
        self.assertEqual(self.got(ALICE), [])


class JoinTests(UdpTestMixin, SynchronousTestCase):
    def test_join_welcomes_in_sequence(self):
        """JOIN gets SESSION, then the welcome numbered 1."""
        datagrams = self.try_join(b"alice")
        secret = SESSION.match(datagrams[0]).group(1)
        self.assertTrue(all(d.startswith(secret + b" ") for d in datagrams[1:]), datagrams)
        frames = [parse_frame(d[len(secret) + 1:]) for d in datagrams[1:]]
        self.assertEqual(frames, [
            DataFrame(1, False, b"* you are alice; 1 in #lobby: alice"),
            DataFrame(2, False, b"* type /help for commands"),
        ])

    def test_peer_is_a_participant(self):
        self.join()
        (peer,) = self.chat.peers()
        self.assertTrue(verifyObject(IParticipant, peer))
        self.assertEqual((peer.nick, peer.via), ("alice", "udp"))

    def test_nick_held_on_tcp_is_refused(self):
        """TCP and UDP share one registry: a UDP user cannot take a TCP user's nick."""
        self.tcp_user("Alice")
        self.assertEqual(self.try_join(b"alice"), [b"! nickname alice is taken, try another"])
        self.assertEqual(self.join(b"alice2")[0], "* you are alice2; 2 in #lobby: Alice, alice2")

    def test_tcp_and_udp_users_chat(self):
        """Lines, joins, /who, /msg, renames and leaves cross transports in the same formats."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        self.assertEqual(bob_out.value(), b"* alice joined\r\n")
        bob_out.clear()
        self.say(b"1 hello bob")
        self.assertEqual(bob_out.value(), b"alice: hello bob\r\n")
        bob.dataReceived(b"hi alice\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["bob: hi alice"])
        self.say(b"2 /who")
        self.assertEqual(self.lines(), ["* 2 in #lobby: bob (tcp), alice (udp)"])
        bob.dataReceived(b"/msg alice psst\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["[private] bob: psst"])
        self.say(b"3 /nick al")
        self.assertEqual(self.lines(), ["* alice is now known as al"])
        bob_out.clear()
        self.say(b"4 /quit bye")
        self.assertEqual(bob_out.value(), b"* al left (bye)\r\n")
        self.assertEqual(self.lines(), ["* goodbye"])
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assertEqual(self.chat.peers(), [])
        self.assertIsNone(self.registry.holder("al"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_every_data_frame_is_acked_and_duplicates_dropped(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.say(b"1 once")
        self.say(b"1 once")
        self.assertEqual(bob_out.value(), b"alice: once\r\n")
        acks = [parse_frame(d) for d in self.got(ALICE)]
        self.assertEqual(acks, [AckFrame(1, ()), AckFrame(1, ())])

    def test_out_of_order_lines_are_delivered_in_order(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.say(b"2 second")
        self.assertEqual(bob_out.value(), b"")
        self.say(b"1 first")
        self.assertEqual(bob_out.value(), b"alice: first\r\nalice: second\r\n")

    def test_ping_gets_pong(self):
        self.join()
        self.say(b"PING\n")
        self.assertEqual(self.got(ALICE), [b"PONG"])

    def test_oversized_line_is_refused_in_sequence(self):
        """A datagram over the limit gets a '! ' line and is acked, never cut."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.say(b"1 " + b"x" * MAX_DATAGRAM)
        self.assertEqual(self.lines(), [f"! message too long (max {MAX_DATAGRAM} bytes)"])
        self.say(b"2 short")
        self.assertEqual(bob_out.value(), b"alice: short\r\n")

    def test_malformed_datagram_from_a_member(self):
        """Only a datagram with the right secret is told it is malformed."""
        self.join()
        self.say(b"hello without a number")
        self.say(b"")
        self.assertEqual(
            self.got(ALICE), [b"! malformed datagram (see docs/udp-protocol.md)"] * 2
        )

    def test_oversized_without_a_number_is_refused(self):
        self.join()
        self.say(b"ACK " + b"1 " * MAX_DATAGRAM)
        self.assertEqual(self.got(ALICE), [b"! datagram too long (max 1200 bytes)"])

    def test_long_lines_to_udp_are_split_and_whole(self):
        """A TCP user's 4000-byte line reaches a UDP user as continued pieces."""
        bob, _ = self.tcp_user("bob")
        self.join()
        bob.dataReceived(b"y" * 4000 + b"\n")
        self.clock.advance(0)
        raw = [d for d, a in self.wire.written if a == ALICE]
        self.assertTrue(all(len(d) <= MAX_DATAGRAM for d in raw), [len(d) for d in raw])
        frames = [parse_frame(d) for d in self.got(ALICE)]
        self.assertEqual([f.more for f in frames], [True, True, True, False])
        self.assertEqual(b"".join(f.payload for f in frames), b"bob: " + b"y" * 4000)


class ReliabilityTests(UdpTestMixin, SynchronousTestCase):
    def test_unacked_lines_are_retransmitted(self):
        self.join()
        bob, _ = self.tcp_user("bob")
        self.got(ALICE)
        self.clock.advance(0.25)
        self.assertEqual([parse_frame(d).seq for d in self.got(ALICE)], [3])

    def test_silent_peer_gives_up_and_leaves(self):
        """Retries run out: others see '* alice left (timed out)'; no timers remain."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        bob.dataReceived(b"anyone?\n")
        for _ in range(200):
            self.clock.advance(1)
        self.assertIn(b"* alice left (timed out)\r\n", bob_out.value())
        self.assertEqual(self.chat.peers(), [])
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.admission.total, 1)  # bob only

    def test_expiry_after_udp_timeout(self):
        """A UDP user silent for --udp-timeout is expired: nick freed, others told."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.clock.advance(59)
        self.say(b"PING")
        self.clock.advance(59)
        self.assertEqual(bob_out.value(), b"")
        self.clock.advance(20)
        self.assertEqual(bob_out.value(), b"* alice left (timed out)\r\n")
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_peer_too_far_behind_is_dropped(self):
        """More unacknowledged lines than the channel holds: the peer is dropped."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        for i in range(1100):
            bob.dataReceived(b"line %d\n" % i)
            self.clock.advance(0)
            self.say(b"PING")
        self.assertIn(b"* alice left (too slow to read)\r\n", bob_out.value())
        self.assertEqual(self.chat.peers(), [])


class ShutdownTests(UdpTestMixin, SynchronousTestCase):
    def test_close_all_tells_udp_users_reliably(self):
        self.join()
        d = self.hub.close_all("server shutting down")
        self.assertNoResult(d)
        self.clock.advance(0.25)  # first copy unacked: it is sent again
        frames = [parse_frame(d) for d in self.got(ALICE)]
        self.assertEqual(len(frames), 2)
        self.assertEqual(frames[0], frames[1])
        self.assertEqual(frames[0].payload, b"* server shutting down")
        self.assertNoResult(d)
        self.say(encode_ack(frames[0].seq))
        self.successResultOf(d)
        self.assertEqual(self.got(ALICE), [b"BYE"])

    def test_stop_protocol_cancels_every_timer(self):
        self.join()
        self.tcp_user("bob")
        self.chat.stopProtocol()
        self.clock.advance(0)
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if c.active()], []
        )


class AdmissionTests(UdpTestMixin, SynchronousTestCase):
    def test_udp_joins_count_against_the_caps(self):
        self.admission = Admission(max_clients=10, max_per_ip=1)
        self.make_chat()
        self.join()
        self.assertEqual(
            self.try_join(b"bob", BOB),
            [b"! too many connections from your address (max 1)"],
        )
        self.assertEqual([p.nick for p in self.chat.peers()], ["alice"])
        self.assertEqual(self.admission.total, 1)


class SendFailureTests(UdpTestMixin, SynchronousTestCase):
    """A datagram the kernel refuses is a lost datagram, not a broken user."""

    def test_refused_send_is_retransmitted_later(self):
        bob, _ = self.tcp_user("bob")
        self.join()
        failing = {"on": True}
        real_write = self.wire.write

        def write(datagram, address):
            if failing["on"]:
                raise OSError(11, "Resource temporarily unavailable")
            real_write(datagram, address)

        self.wire.write = write
        bob.dataReceived(b"are you there?\n")
        self.clock.advance(0)
        self.assertEqual([p.nick for p in self.chat.peers()], ["alice"])
        failing["on"] = False
        self.clock.advance(0.3)
        self.assertEqual(self.lines(), ["bob: are you there?"])


class ClosingTests(UdpTestMixin, SynchronousTestCase):
    def test_user_being_closed_cannot_talk(self):
        """Once the goodbye is sent the session is over: nothing more reaches the room."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        (peer,) = self.chat.peers()
        peer.session.end("server shutting down", goodbye="server shutting down")
        self.clock.advance(0)
        self.say(b"1 still here")
        self.assertNotIn(b"alice: still here", bob_out.value())
        self.assertIsNone(self.registry.holder("alice"))


def other_secret(secret):
    """A well-formed secret that is not C{secret} (its last hex digit changed)."""
    return secret[:-1] + (b"0" if secret[-1:] != b"0" else b"1")


class SessionSecretTests(UdpTestMixin, SynchronousTestCase):
    """After JOIN only datagrams carrying the session's secret count; forgeries get nothing."""

    def test_each_session_gets_its_own_64_bit_secret(self):
        self.join(b"alice", ALICE)
        self.join(b"bob", BOB)
        self.assertEqual([len(s) for s in self.secrets.values()], [16, 16])
        self.assertNotEqual(self.secrets[ALICE], self.secrets[BOB])
        self.say(b"BYE", ALICE)
        self.got(ALICE)
        before = self.secrets[ALICE]
        self.join(b"alice", ALICE)
        self.assertNotEqual(self.secrets[ALICE], before)

    def test_forged_ack_cannot_stop_retransmission(self):
        """A spoofed C{ACK 2147483648} used to make the server drop the user's unacked lines."""
        bob, _ = self.tcp_user("bob")
        self.join()
        bob.dataReceived(b"are you there?\n")
        self.clock.advance(0)
        (line,) = self.got(ALICE)
        self.receive(b"ACK 2147483648")
        self.receive(other_secret(self.secrets[ALICE]) + b" ACK 4294967295")
        self.assertEqual(self.got(ALICE), [])
        self.clock.advance(0.25)
        self.assertEqual(self.got(ALICE), [line])

    def test_forged_line_is_not_applied(self):
        """A spoofed C{1 /nick x} used to rename the user and make the real line 1 a duplicate."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.receive(b"1 /nick x")
        self.receive(other_secret(self.secrets[ALICE]) + b" 1 /nick y")
        self.assertEqual((bob_out.value(), self.got(ALICE)), (b"", []))
        self.say(b"1 hello")
        self.assertEqual(bob_out.value(), b"alice: hello\r\n")
        self.assertEqual([p.nick for p in self.chat.peers()], ["alice"])
        self.assertIsNone(self.registry.holder("x"))

    def test_another_sessions_secret_is_wrong(self):
        carol, carol_out = self.tcp_user("carol")
        self.join(b"alice", ALICE)
        self.join(b"bob", BOB)
        self.assertEqual(self.lines(ALICE), ["* bob joined"])
        carol_out.clear()
        self.receive(self.secrets[BOB] + b" 1 from the wrong address", ALICE)
        self.assertEqual((carol_out.value(), self.wire.written), (b"", []))

    def test_forged_datagrams_get_no_reply_at_all(self):
        """Not even C{! malformed datagram}: forged traffic toward a joined address never grows."""
        self.join()
        wrong = other_secret(self.secrets[ALICE])
        for datagram in [
            b"x", b"", b"\n", b"PING", b"BYE", b"ACK 1", b"1 hi", b"HELLO there, token please",
            b"JOIN 0000000000 alice", b"\xff\xfe garbage", b"x" * 5000, b"1 " + b"y" * 5000,
            wrong + b" PING", wrong + b" garbage", wrong + b" BYE", wrong, wrong + b" " * 3000,
            self.secrets[ALICE][:-1] + b" PING", self.secrets[ALICE] + b"0 PING",
        ]:
            self.chat.datagramReceived(datagram, ALICE)
        self.clock.advance(0)
        self.assertEqual(self.wire.written, [])
        self.assertEqual([p.nick for p in self.chat.peers()], ["alice"])

    def test_forged_datagrams_are_no_proof_of_life(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        wrong = other_secret(self.secrets[ALICE])
        for _ in range(16):
            self.clock.advance(5)
            self.receive(b"PING")
            self.receive(wrong + b" PING")
        self.assertEqual(bob_out.value(), b"* alice left (timed out)\r\n")
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_secret_alone_is_malformed(self):
        self.join()
        self.receive(self.secrets[ALICE])
        self.assertEqual(
            self.got(ALICE), [b"! malformed datagram (see docs/udp-protocol.md)"]
        )

    def test_repeated_join_gets_the_same_session_and_nothing_else(self):
        """The first SESSION may have been lost: a JOIN with the address's token gets it again."""
        self.join()
        session = b"SESSION " + self.secrets[ALICE]
        token = self.chat.token_for(ALICE)
        self.receive(b"JOIN " + token + b" alice")
        self.assertEqual(self.got(ALICE), [session])
        self.receive(b"JOIN " + token + b" carol")
        self.assertEqual(self.got(ALICE), [session])
        self.receive(b"JOIN 0000000000 alice")
        self.assertEqual(self.got(ALICE), [])
        self.assertEqual([p.nick for p in self.chat.peers()], ["alice"])
        self.assertIsNone(self.registry.holder("carol"))
        self.say(b"1 still the same session")
        self.assertEqual(self.got(ALICE), [b"ACK 1"])

    def test_bye_ends_the_session_as_a_quit(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.say(b"BYE")
        self.assertEqual(bob_out.value(), b"* alice left (quit)\r\n")
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assertEqual(self.chat.peers(), [])
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.admission.total, 1)  # bob
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.say(b"BYE")  # the address is a stranger again
        self.assertEqual(self.got(ALICE), [])

    def test_bye_drops_lines_not_yet_acknowledged(self):
        bob, _ = self.tcp_user("bob")
        self.join()
        bob.dataReceived(b"one\ntwo\n")
        self.clock.advance(0)
        self.say(b"BYE")
        self.assertEqual(self.got(ALICE)[-1], b"BYE")
        self.clock.advance(100)
        self.assertEqual(self.got(ALICE), [])


class ServerSecretTests(UdpTestMixin, SynchronousTestCase):
    """
    After C{SESSION s} every datagram the server sends starts with C{s} and a space, so the
    client can tell the server's datagrams from ones forged with the server's address.
    """

    def after_session(self, address=ALICE):
        """Every raw datagram sent to C{address} since its C{SESSION}, which must be first."""
        raw = [d for d, a in self.wire.written if a == address]
        self.wire.written = [(d, a) for d, a in self.wire.written if a != address]
        return raw

    def assert_all_carry_the_secret(self, raw, address=ALICE):
        secret = self.secrets[address]
        self.assertNotEqual(raw, [])
        for datagram in raw:
            self.assertTrue(datagram.startswith(secret + b" "), datagram[:60])
            self.assertTrue(datagram.endswith(b"\n"), datagram[-20:])
            self.assertLessEqual(len(datagram), MAX_DATAGRAM)
            if datagram[:-1] != b"SESSION " + secret:
                parse_frame(datagram[len(secret) + 1:-1])  # the rest is a frame as before

    def test_a_whole_session_user_quits(self):
        """Join, chat, long lines, ping, malformed and too long input, retransmissions, /quit."""
        bob, _ = self.tcp_user("bob")
        token = self.token()
        self.receive(b"JOIN " + token + b" alice")
        first = [d for d, a in self.wire.written if a == ALICE]
        self.secrets[ALICE] = SESSION.match(first[0].rstrip(b"\n")).group(1)
        self.wire.written = [(d, a) for d, a in self.wire.written if a != ALICE]
        raw = first[1:]
        self.say(b"ACK 2")
        self.say(b"1 hello")
        bob.dataReceived(b"hi alice\n" + b"z" * 3000 + b"\n")
        self.clock.advance(0.3)  # unacknowledged: retransmitted
        self.say(b"PING")
        self.say(b"no number")
        self.say(b"")
        self.say(b"2 " + b"x" * MAX_DATAGRAM)
        self.say(b"ACK " + b"1 " * MAX_DATAGRAM)
        self.say(b"3+ a piece")
        self.say(b"ACK 9")
        self.say(b"4 /quit")
        raw += self.after_session()
        self.say(b"ACK 10")
        raw += self.after_session()
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(raw[-1], self.secrets[ALICE] + b" BYE\n")
        self.assertIn(self.secrets[ALICE] + b" PONG\n", raw)
        self.assertIn(self.secrets[ALICE] + b" ! malformed datagram (see docs/udp-protocol.md)\n",
                      raw)
        self.assertIn(self.secrets[ALICE] + b" ! datagram too long (max 1200 bytes)\n", raw)
        self.assertIn(self.secrets[ALICE] + b" ACK 4\n", raw)
        self.assert_all_carry_the_secret(raw)
        # The bound is tight: the secret came out of each piece, not on top of the datagram.
        pieces = [
            parse_frame(d[SECRET_AND_SPACE:-1]) for d in raw if re.match(rb"[0-9a-f]{16} \d+\+ ", d)
        ]
        self.assertEqual({len(p.payload) for p in pieces},
                         {MAX_DATAGRAM - SECRET_AND_SPACE - HEADER_ROOM - 1})

    def test_client_bye_repeated_join_and_shutdown(self):
        self.join()
        token = self.chat.token_for(ALICE)
        self.receive(b"JOIN " + token + b" alice")
        self.assertEqual(self.after_session(), [b"SESSION " + self.secrets[ALICE] + b"\n"])
        self.say(b"BYE")
        self.assertEqual(self.after_session(), [self.secrets[ALICE] + b" BYE\n"])
        self.join()
        d = self.hub.close_all("server shutting down")
        self.clock.advance(0.3)
        raw = self.after_session()
        self.say(encode_ack(4))
        self.successResultOf(d)
        raw += self.after_session()
        self.assertEqual(raw[-1], self.secrets[ALICE] + b" BYE\n")
        self.assert_all_carry_the_secret(raw)

    def test_peer_says_where_it_connects_from(self):
        self.join()
        (peer,) = self.chat.peers()
        self.assertEqual(peer.peer, "127.0.0.1:40001")


class RefusedJoinTests(UdpTestMixin, SynchronousTestCase):
    """A refused JOIN gets one unnumbered C{! } datagram and leaves nothing on the server."""

    def test_taken_nick(self):
        self.tcp_user("bob")
        self.assertEqual(self.try_join(b"Bob"), [b"! nickname Bob is taken, try another"])
        self.assert_nothing_left(admitted=1)

    def refusal_for(self, nick):
        """The C{! } line the registry's rules give for C{nick}."""
        try:
            validate(nick)
        except InvalidNick as e:
            return b"! " + str(e).encode()
        self.fail(f"{nick!r} is a valid nick")

    def test_invalid_nick(self):
        self.assertEqual(self.try_join(b"9lives"), [self.refusal_for("9lives")])
        self.assert_nothing_left()

    def test_a_command_is_no_nick(self):
        """JOIN names a nick: C{/help} or C{/quit} there is refused as a nick, never run."""
        for word in ["/help", "/quit", "/who", "//x"]:
            self.assertEqual(self.try_join(word.encode()), [self.refusal_for(word)])
            self.assert_nothing_left()

    def test_a_nick_of_control_characters_only(self):
        (reply,) = self.try_join(b"\x1b\x07")
        self.assertTrue(reply.startswith(b"! "), reply)
        self.assert_nothing_left()

    def test_server_full(self):
        self.admission = Admission(max_clients=1, max_per_ip=0)
        self.make_chat()
        self.tcp_user("bob")
        self.assertEqual(self.try_join(b"alice"), [b"! server full (1 clients), try later"])
        self.assert_nothing_left(admitted=1)

    def test_shutting_down(self):
        self.hub.closing = True
        self.assertEqual(self.try_join(b"alice"), [b"! server shutting down"])
        self.assert_nothing_left()

    def test_another_join_after_a_refusal(self):
        self.tcp_user("bob")
        self.try_join(b"bob")
        self.assertEqual(self.join(b"alice")[0], "* you are alice; 2 in #lobby: bob, alice")


class LateRegistryTests(UdpTestMixin, SynchronousTestCase):
    """A registry that answers later: nothing is shown or kept beyond the answer."""

    def setUp(self):
        super().setUp()
        self.registry = DeferredRegistry()
        self.make_chat()

    def test_nothing_before_the_answer_then_session_and_welcome(self):
        token = self.token()
        self.receive(b"JOIN " + token + b" alice")
        self.receive(b"JOIN " + token + b" alice")  # a client retrying: still waiting
        self.receive(b"1 hi")
        self.receive(b"PING")
        self.assertEqual(self.got(ALICE), [])
        self.assertEqual(len(self.registry.waiting), 1)
        self.registry.answer()
        self.clock.advance(0)
        datagrams = self.got(ALICE)
        secret = SESSION.match(datagrams[0]).group(1)
        self.assertTrue(all(d.startswith(secret + b" ") for d in datagrams[1:]), datagrams)
        self.assertEqual(
            [parse_frame(d[len(secret) + 1:]) for d in datagrams[1:]],
            [DataFrame(1, False, b"* you are alice; 1 in #lobby: alice"),
             DataFrame(2, False, b"* type /help for commands")],
        )

    def test_late_refusal_leaves_nothing(self):
        self.registry.real.reserve("alice", object())
        token = self.token()
        self.receive(b"JOIN " + token + b" alice")
        self.assertEqual(self.got(ALICE), [])
        self.assertEqual(self.admission.total, 1)
        self.registry.answer()
        self.clock.advance(0)
        self.assertEqual(self.got(ALICE), [b"! nickname alice is taken, try another"])
        self.assert_nothing_left()

    def test_no_answer_in_time_leaves_nothing(self):
        token = self.token()
        self.receive(b"JOIN " + token + b" alice")
        self.clock.advance(REGISTRY_TIMEOUT)
        (reply,) = self.got(ALICE)
        self.assertTrue(reply.startswith(b"! "), reply)
        self.assert_nothing_left()

    def test_shutdown_while_waiting(self):
        token = self.token()
        self.receive(b"JOIN " + token + b" alice")
        d = self.hub.close_all("server shutting down")
        self.successResultOf(d)
        self.assertEqual(self.got(ALICE), [b"! server shutting down"])
        self.registry.answer()  # granted too late: given back
        self.clock.advance(0)
        self.assertIsNone(self.registry.real.holder("alice"))
        self.assert_nothing_left()


class PeerLogTests(UdpTestMixin, SynchronousTestCase):
    def test_log_lines_about_a_peer_name_its_address(self):
        bob, _ = self.tcp_user("bob")
        with capturedLogs() as events:
            self.try_join(b"bob", ALICE)  # refused
            self.join(b"alice", ALICE)
            bob.dataReceived(b"anyone?\n")
            for _ in range(200):  # alice never answers: given up on
                self.clock.advance(1)
            self.join(b"carol", BOB)
            self.say(b"BYE", BOB)
        about_peers = [
            e for e in events
            if e.get("log_namespace", "").startswith(("chatservice.frontends.udp", "chatservice.frontends.reliable"))
        ]
        for event in about_peers:
            self.assertIn(event.get("address", event.get("peer")), (ALICE, BOB), event)
        lines = [(formatEvent(e), e.get("address", e.get("peer"))) for e in about_peers]
        for text, address in [
            ("UDP join from ('127.0.0.1', 40001) refused: nickname bob is taken, try another",
             ALICE),
            ("UDP peer ('127.0.0.1', 40001) joined as alice", ALICE),
            ("UDP peer ('127.0.0.1', 40001) (alice) gone: timed out", ALICE),
            ("UDP peer ('127.0.0.1', 40002) (carol) said BYE", BOB),
        ]:
            self.assertIn((text, address), lines)
        self.assertTrue(any(t.startswith("Giving up on peer ('127.0.0.1', 40001)")
                            for t, _ in lines), lines)


class InputPausingTests(UdpTestMixin, SynchronousTestCase):
    """UDP cannot stop its sender: pausing does nothing, and the session holds the excess."""

    def test_pause_and_resume_are_no_ops(self):
        self.join()
        (peer,) = self.chat.peers()
        self.assertIsNone(peer.pause_input())
        self.assertIsNone(peer.resume_input())
        self.clock.advance(0)
        self.assertEqual(self.got(ALICE), [])

    def test_lines_over_the_rate_are_acked_at_once_and_relayed_in_order(self):
        self.limits = Limits(flood=FloodPolicy(rate=1, burst=2, queue=10))
        self.make_chat()
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        for n in range(1, 6):
            self.say(b"%d line %d" % (n, n))
        acks = [d for d in self.got(ALICE) if d.startswith(b"ACK")]
        self.assertEqual(acks[-1], b"ACK 5")
        self.clock.pump([1] * 10)
        relayed = [line for line in bob_out.value().split(b"\r\n") if line.startswith(b"alice:")]
        self.assertEqual(relayed, [b"alice: line %d" % n for n in range(1, 6)])


class MultiLineReplyTests(UdpTestMixin, SynchronousTestCase):
    """A reply of several text lines comes as one numbered line per text line, in order."""

    def assert_one_line_per_frame(self):
        """Every frame sent to alice so far: numbered, whole, no newline inside; ACKed."""
        frames = [parse_frame(d) for d in self.got(ALICE)]
        data = [f for f in frames if isinstance(f, DataFrame)]
        self.assertEqual([f.more for f in data], [False] * len(data))
        self.assertEqual([f.seq for f in data], list(range(data[0].seq, data[0].seq + len(data))))
        for frame in data:
            self.assertNotIn(b"\n", frame.payload)
            self.assertNotIn(b"\r", frame.payload)
        self.ack(data)
        return [f.payload.decode() for f in data]

    def test_help(self):
        self.join()
        self.say(b"1 /help")
        self.assertEqual(
            self.assert_one_line_per_frame(), ["* " + line for line in HELP_LINES]
        )
        self.assertGreater(len(HELP_LINES), 5)

    def test_rooms(self):
        bob, _ = self.tcp_user("bob")
        bob.dataReceived(b"/join #dev\n/topic #dev builds\n")
        self.clock.advance(0)
        self.join()
        self.say(b"1 /rooms")
        self.assertEqual(
            self.assert_one_line_per_frame(),
            ["* 2 rooms:", "*   #dev (1): builds", "*   #lobby (2)"],
        )


class RoomTests(UdpTestMixin, SynchronousTestCase):
    """A UDP user has a current room; lines from its other rooms carry C{[#room] }."""

    def test_lines_from_the_other_room_carry_its_name(self):
        bob, bob_out = self.tcp_user("bob")
        carol, _ = self.tcp_user("carol")
        carol.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.join()
        self.say(b"1 /join #dev")
        self.assertEqual(self.lines(), ["* you joined #dev; 2 here: carol, alice"])
        bob.dataReceived(b"back in five\n/me waves\n")
        carol.dataReceived(b"in dev\n")
        self.clock.advance(0)
        self.assertEqual(
            self.lines(), ["[#lobby] bob: back in five", "[#lobby] * bob waves", "carol: in dev"]
        )
        bob.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["* bob joined"])
        bob_out.clear()
        self.say(b"2 to dev")
        self.assertEqual(bob_out.value(), b"alice: to dev\r\n")  # #dev is bob's current room
        self.say(b"3 /join #lobby")
        self.assertEqual(self.lines(), ["* your lines go to #lobby"])
        carol.dataReceived(b"still in dev\n")
        bob.dataReceived(b"/part #dev off\n")
        self.clock.advance(0)
        self.assertEqual(
            self.lines(), ["[#dev] carol: still in dev", "[#dev] * bob left the room (off)"]
        )

    def test_private_lines_renames_and_quits_carry_no_room(self):
        bob, _ = self.tcp_user("bob")
        bob.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.join()
        self.say(b"1 /join #dev")
        self.say(b"2 /join #lobby")
        self.lines()
        bob.dataReceived(b"/msg alice psst\n/nick robert\n/quit later\n")
        self.clock.advance(0)
        self.assertEqual(
            self.lines(),
            ["[private] bob: psst", "* bob is now known as robert", "* robert left (later)"],
        )


class EndingTests(UdpTestMixin, SynchronousTestCase):
    """
    The session owns ending: a BYE, a timeout and a shutdown each end alice's session once,
    and C{UdpPeer.close} only says goodbye and hangs up.
    """

    def setUp(self):
        super().setUp()
        self.sink = RecordingSink()
        self.hub = Hub(self.clock, sinks=(self.sink,))
        self.make_chat()
        self.departed = []
        depart = self.hub.depart

        def counting_depart(participant, reason):
            self.departed.append((participant.nick, reason))
            return depart(participant, reason)

        self.hub.depart = counting_depart

    def two_rooms(self):
        """bob (TCP) and alice (UDP), both in #lobby and #dev; bob's output cleared."""
        bob, bob_out = self.tcp_user("bob")
        bob.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.join()
        self.say(b"1 /join #dev")
        self.lines()
        bob_out.clear()
        (peer,) = self.chat.peers()
        return bob, bob_out, peer

    def count_session_ends(self, peer):
        ends = []
        end = peer.session.end

        def counting_end(reason, goodbye=None):
            ends.append(reason)
            return end(reason, goodbye)

        peer.session.end = counting_end
        return ends

    def assert_ended_once(self, bob_out, reason, shown=True):
        self.clock.advance(0)
        lefts = [e for e in self.sink.recorded if isinstance(e, Left) and e.nick == "alice"]
        self.assertEqual([(e.rooms, e.reason) for e in lefts], [(("#lobby", "#dev"), reason)])
        self.assertEqual(self.departed.count(("alice", reason)), 1, self.departed)
        self.assertEqual([nick for nick, _ in self.departed], ["alice"])
        expected = f"* alice left ({reason})\r\n".encode() if shown else b""
        self.assertEqual(bob_out.value(), expected)
        self.assertEqual(self.chat.peers(), [])
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.admission.total, 1)  # bob

    def test_bye(self):
        bob, bob_out, peer = self.two_rooms()
        self.say(b"BYE")
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assert_ended_once(bob_out, "quit")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_quit(self):
        bob, bob_out, peer = self.two_rooms()
        self.say(b"2 /quit bye all")
        self.assertEqual(self.lines(), ["* goodbye"])
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assert_ended_once(bob_out, "bye all")
        self.say(b"BYE")  # a stranger now: nothing
        self.assertEqual(self.got(ALICE), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silence_past_the_udp_timeout(self):
        bob, bob_out, peer = self.two_rooms()
        self.clock.pump([10] * 10)
        self.assert_ended_once(bob_out, "timed out")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retransmissions_run_out(self):
        bob, bob_out, peer = self.two_rooms()
        bob.dataReceived(b"anyone?\n")
        self.clock.advance(0)
        bob_out.clear()
        for _ in range(200):
            self.say(b"PING")  # alive, but never acknowledging
            self.clock.advance(1)
        self.assert_ended_once(bob_out, "timed out")

    def test_too_slow_to_read(self):
        """Given up on from inside a delivery to both rooms: ended once, right after the turn."""
        bob, bob_out, peer = self.two_rooms()
        for i in range(1100):
            bob.dataReceived(b"line %d\n" % i)
            self.clock.advance(0)
            self.say(b"PING")  # alive, but never acknowledging
        self.assertEqual(bob_out.value(), b"* alice left (too slow to read)\r\n")
        bob_out.clear()
        self.assert_ended_once(bob_out, "too slow to read", shown=False)

    def test_shutdown(self):
        """Everyone is told the server is going; alice's leave is recorded once, shown to nobody."""
        bob, bob_out, peer = self.two_rooms()
        ends = self.count_session_ends(peer)
        d = self.hub.close_all("server shutting down")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["* server shutting down"])
        self.assertEqual(bob_out.value(), b"* server shutting down\r\n")
        bob.connectionLost(Failure(ConnectionDone()))  # bob's hang-up, done
        self.successResultOf(d)
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.chat.stopProtocol()  # the port closes after the grace: alice is gone already
        self.assertEqual(ends, ["server shutting down"])
        self.assertEqual(sorted(self.departed), [("alice", "server shutting down"),
                                                 ("bob", "server shutting down")])
        lefts = [e for e in self.sink.recorded if isinstance(e, Left)]
        self.assertEqual(sorted(e.nick for e in lefts), ["alice", "bob"])
        self.assertNotIn(b"left", bob_out.value())
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_shutdown_while_the_client_never_answers(self):
        bob, bob_out, peer = self.two_rooms()
        d = self.hub.close_all("server shutting down")
        bob.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(d)
        for _ in range(200):
            self.clock.advance(1)
        self.successResultOf(d)
        self.chat.stopProtocol()
        self.assertEqual(sorted(self.departed), [("alice", "server shutting down"),
                                                 ("bob", "server shutting down")])
        lefts = [e.nick for e in self.sink.recorded if isinstance(e, Left)]
        self.assertEqual(sorted(lefts), ["alice", "bob"])
        self.assertEqual(self.chat.peers(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_says_goodbye_and_never_ends_the_session(self):
        """Only the session calls C{close}, once it has ended; close does not call back."""
        bob, bob_out, peer = self.two_rooms()
        ends = self.count_session_ends(peer)
        d = peer.close("going")
        self.assertEqual(ends, [])
        self.assertEqual(self.departed, [])
        self.assertEqual(self.lines(), ["* going"])
        self.successResultOf(d)
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assertEqual((ends, self.departed), ([], []))
        self.assertEqual(self.chat.peers(), [])
        self.successResultOf(peer.close("again"))  # hung up: nothing more
        self.assertEqual(self.got(ALICE), [])

    def test_session_end_closes_the_peer_once(self):
        bob, bob_out, peer = self.two_rooms()
        closes = []
        close = peer.close
        peer.close = lambda reason: closes.append(reason) or close(reason)
        d = peer.session.end("kicked", goodbye="you were kicked")
        peer.session.end("kicked again", goodbye="again")
        self.assertEqual(closes, ["you were kicked"])
        self.assertEqual(self.lines(), ["* you were kicked"])
        self.successResultOf(d)
        self.assertEqual(self.got(ALICE), [b"BYE"])
        self.assert_ended_once(bob_out, "kicked")
