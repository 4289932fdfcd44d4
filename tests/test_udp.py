"""The UDP side: challenge, join, reliable lines, expiry, shutdown, limits."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chatservice.flood import FloodPolicy
from chatservice.interfaces import IParticipant
from chatservice.limits import Admission, Limits
from chatservice.nicks import NickRegistry
from chatservice.reliable import AckFrame, DataFrame, encode_ack, parse_frame
from chatservice.room import Room
from chatservice.tcp import LineChatFactory
from chatservice.udp import MAX_DATAGRAM, DatagramChat, UdpPeer

ALICE = ("127.0.0.1", 40001)
MALLORY = ("127.0.0.1", 40666)


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
        self.room = Room(self.clock)
        self.admission = Admission(self.limits.max_clients, self.limits.max_per_ip)
        self.chat = DatagramChat(
            self.room, self.registry, self.clock, self.admission, self.limits, secret=b"k"
        )
        self.wire = FakeDatagramTransport()
        self.chat.makeConnection(self.wire)

    def receive(self, datagram, address=ALICE):
        self.chat.datagramReceived(datagram, address)
        self.clock.advance(0)

    def join(self, nick=b"alice", address=ALICE):
        """HELLO, TOKEN, JOIN; return the lines the server sent in sequence."""
        self.receive(b"HELLO " + nick, address)
        (reply,) = self.wire.take(address)
        token = reply.split()[1]
        self.receive(b"JOIN " + token + b" " + nick, address)
        return self.lines(address)

    def lines(self, address=ALICE, ack=True):
        """Data lines sent to C{address}; ACK them all (cumulatively) if C{ack}."""
        frames = [parse_frame(d) for d in self.wire.take(address)]
        data = [f for f in frames if isinstance(f, DataFrame)]
        if ack and data:
            self.receive(encode_ack(max(f.seq for f in data)), address)
        return [f.payload.decode() for f in data]

    def tcp_user(self, nick):
        factory = LineChatFactory(self.room, self.registry, self.clock, self.admission, self.limits)
        proto = factory.buildProtocol(type("Addr", (), {"host": "127.0.0.9"})())
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(nick.encode() + b"\n")
        self.clock.advance(0)
        transport.clear()
        return proto, transport


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
        self.assertEqual(len(self.room), 0)

    def test_token_is_bound_to_the_address(self):
        """A token fetched for one address does not admit another."""
        self.chat.datagramReceived(b"HELLO alice", ALICE)
        token = self.wire.take(ALICE)[0].split()[1]
        self.receive(b"JOIN " + token + b" mallory", MALLORY)
        self.assertEqual(self.wire.written, [])
        self.assertIsNone(self.registry.holder("mallory"))

    def test_token_expires(self):
        """A token older than two epochs is refused."""
        self.chat.datagramReceived(b"HELLO alice", ALICE)
        token = self.wire.take(ALICE)[0].split()[1]
        self.clock.advance(200)
        self.receive(b"JOIN " + token + b" alice")
        self.assertEqual(self.wire.take(ALICE), [])


class JoinTests(UdpTestMixin, SynchronousTestCase):
    def test_join_welcomes_in_sequence(self):
        """The first data line after JOIN is the welcome, numbered 1."""
        self.receive(b"HELLO alice")
        token = self.wire.take(ALICE)[0].split()[1]
        self.receive(b"JOIN " + token + b" alice")
        frames = [parse_frame(d) for d in self.wire.take(ALICE)]
        self.assertEqual(frames[0], DataFrame(1, False, b"* you are alice; 1 online: alice"))
        self.assertEqual(frames[1], DataFrame(2, False, b"* type /help for commands"))

    def test_peer_is_a_participant(self):
        self.join()
        (peer,) = self.chat.peers()
        self.assertTrue(verifyObject(IParticipant, peer))
        self.assertEqual((peer.nick, peer.via), ("alice", "udp"))

    def test_nick_held_on_tcp_is_refused(self):
        """TCP and UDP share one registry: a UDP user cannot take a TCP user's nick."""
        self.tcp_user("Alice")
        lines = self.join(b"alice")
        self.assertEqual(
            lines, ["! nickname alice is taken, try another", "* what is your nickname?"]
        )
        self.receive(b"1 alice2")
        self.assertEqual(self.lines()[0], "* you are alice2; 2 online: Alice, alice2")

    def test_tcp_and_udp_users_chat(self):
        """Lines, joins, /who, /msg, renames and leaves cross transports in the same formats."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        self.assertEqual(bob_out.value(), b"* alice joined\r\n")
        bob_out.clear()
        self.receive(b"1 hello bob")
        self.assertEqual(bob_out.value(), b"alice: hello bob\r\n")
        bob.dataReceived(b"hi alice\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["bob: hi alice"])
        self.receive(b"2 /who")
        self.assertEqual(self.lines(), ["* 2 online: bob (tcp), alice (udp)"])
        bob.dataReceived(b"/msg alice psst\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(), ["[private] bob: psst"])
        self.receive(b"3 /nick al")
        self.assertEqual(self.lines(), ["* alice is now known as al"])
        bob_out.clear()
        self.receive(b"4 /quit bye")
        self.assertEqual(bob_out.value(), b"* al left (bye)\r\n")
        self.assertEqual(self.lines(), ["* goodbye"])
        self.assertEqual(self.wire.take(ALICE), [b"BYE"])
        self.assertEqual(self.chat.peers(), [])
        self.assertIsNone(self.registry.holder("al"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_every_data_frame_is_acked_and_duplicates_dropped(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.receive(b"1 once")
        self.receive(b"1 once")
        self.assertEqual(bob_out.value(), b"alice: once\r\n")
        acks = [parse_frame(d) for d in self.wire.take(ALICE)]
        self.assertEqual(acks, [AckFrame(1, ()), AckFrame(1, ())])

    def test_out_of_order_lines_are_delivered_in_order(self):
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.receive(b"2 second")
        self.assertEqual(bob_out.value(), b"")
        self.receive(b"1 first")
        self.assertEqual(bob_out.value(), b"alice: first\r\nalice: second\r\n")

    def test_ping_gets_pong(self):
        self.join()
        self.receive(b"PING\n")
        self.assertEqual(self.wire.take(ALICE), [b"PONG"])

    def test_oversized_line_is_refused_in_sequence(self):
        """A datagram over the limit gets a '! ' line and is acked, never cut."""
        bob, bob_out = self.tcp_user("bob")
        self.join()
        bob_out.clear()
        self.receive(b"1 " + b"x" * MAX_DATAGRAM)
        self.assertEqual(self.lines(), [f"! message too long (max {MAX_DATAGRAM} bytes)"])
        self.receive(b"2 short")
        self.assertEqual(bob_out.value(), b"alice: short\r\n")

    def test_malformed_datagram_from_a_member(self):
        self.join()
        self.receive(b"hello without a number")
        self.assertEqual(self.wire.take(ALICE), [b"! malformed datagram (see docs/udp-protocol.md)"])

    def test_long_lines_to_udp_are_split_and_whole(self):
        """A TCP user's 4000-byte line reaches a UDP user as continued pieces."""
        bob, _ = self.tcp_user("bob")
        self.join()
        bob.dataReceived(b"y" * 4000 + b"\n")
        self.clock.advance(0)
        frames = [parse_frame(d) for d in self.wire.take(ALICE)]
        self.assertTrue(all(len(d) <= MAX_DATAGRAM for d in [f.payload for f in frames]))
        self.assertEqual([f.more for f in frames], [True, True, True, False])
        self.assertEqual(b"".join(f.payload for f in frames), b"bob: " + b"y" * 4000)


class ReliabilityTests(UdpTestMixin, SynchronousTestCase):
    def test_unacked_lines_are_retransmitted(self):
        self.join()
        bob, _ = self.tcp_user("bob")
        self.wire.take(ALICE)
        self.clock.advance(0.25)
        self.assertEqual([parse_frame(d).seq for d in self.wire.take(ALICE)], [3])

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
        self.receive(b"PING")
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
            self.receive(b"PING")
        self.assertIn(b"* alice left (too slow to read)\r\n", bob_out.value())
        self.assertEqual(self.chat.peers(), [])


class ShutdownTests(UdpTestMixin, SynchronousTestCase):
    def test_close_all_tells_udp_users_reliably(self):
        self.join()
        d = self.room.close_all("server shutting down")
        self.assertNoResult(d)
        self.clock.advance(0.25)  # first copy unacked: it is sent again
        frames = [parse_frame(d) for d in self.wire.take(ALICE)]
        self.assertEqual(len(frames), 2)
        self.assertEqual(frames[0], frames[1])
        self.assertEqual(frames[0].payload, b"* server shutting down")
        self.assertNoResult(d)
        self.receive(encode_ack(frames[0].seq))
        self.successResultOf(d)
        self.assertEqual(self.wire.take(ALICE), [b"BYE"])

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
        self.chat.admission = self.admission
        self.join()
        lines = self.join(b"bob", ("127.0.0.1", 40002))
        self.assertEqual(lines, [])
        self.assertEqual(
            self.wire.take(("127.0.0.1", 40002)), []
        )


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
        peer.close("server shutting down")
        self.clock.advance(0)
        self.receive(b"1 still here")
        self.assertNotIn(b"alice: still here", bob_out.value())
        self.assertIsNone(self.registry.holder("alice"))
