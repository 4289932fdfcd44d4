"""
Flood control over TCP delays instead of dropping: a paste over the rate reaches the others whole
and in order, at the sustained rate, while the server stops reading the sender's socket.

The unit tests drive L{LineChatProtocol} on a C{StringTransport} and a C{task.Clock}; the
integration test pastes 30 lines through a real socket to the real service, as a telnet user
pasting into their terminal would (the complaint that started this: lines 21-29 were lost).
"""

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.line import LineChatFactory, peer_name
from tests import support

SLOWED = (
    "* slow down: you may send 10 lines per second; "
    "your next lines are held back and sent at that rate"
)


class PasteUnitTests(SynchronousTestCase):
    """A 30-line paste in one read: 20 at once, the rest at 10 a second, socket paused meanwhile."""

    def setUp(self):
        self.clock = Clock()
        limits = Limits(flood=FloodPolicy(rate=10, burst=20))
        self.factory = LineChatFactory(
            Hub(self.clock), NickRegistry(), self.clock, Admission(100, 100), limits
        )

    def connect(self, nick):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(nick.encode() + b"\r\n")
        self.clock.advance(60)  # the nick spent a token; a full bucket again
        transport.clear()
        return proto, transport

    def lines(self, transport):
        return transport.value().decode().split("\r\n")[:-1]

    def test_paste_is_delayed_not_dropped(self):
        alice, alice_out = self.connect("alice")
        bob, bob_out = self.connect("bob")
        alice_out.clear()
        paste = b"".join(b"line %d\r\n" % n for n in range(1, 31))
        alice.dataReceived(paste)
        self.clock.advance(0)
        self.assertEqual(self.lines(bob_out), [f"alice: line {n}" for n in range(1, 21)])
        self.assertEqual(alice_out.producerState, "paused")
        self.assertEqual(self.lines(alice_out), [SLOWED])
        self.clock.pump([0.05] * 20)
        self.assertEqual(self.lines(bob_out), [f"alice: line {n}" for n in range(1, 31)])
        self.assertEqual(alice_out.producerState, "producing")
        self.assertEqual(self.lines(alice_out), [SLOWED])
        # Typing on afterwards works as usual.
        self.clock.advance(5)
        alice.dataReceived(b"after\r\n")
        self.clock.advance(0)
        self.assertEqual(self.lines(bob_out)[-1], "alice: after")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_held_read_is_kept_as_bytes(self):
        """A paused 64 KiB read of short lines is held as one block of bytes, not 21,000 objects."""
        alice, alice_out = self.connect("alice")
        bob, bob_out = self.connect("bob")
        read = b"ab\n" * (65536 // 3)
        alice.dataReceived(read)
        self.assertEqual(alice_out.producerState, "paused")
        held = list(alice._pending)
        self.assertEqual(len(held), 1)
        self.assertLessEqual(len(held[0]), len(read))
        self.clock.advance(0.1)  # one more line goes; still one block, consumed by offset
        self.assertEqual(len(alice._pending), 1)
        self.assertIs(alice._pending[0], held[0])

    def test_paste_split_across_reads_keeps_order(self):
        alice, alice_out = self.connect("alice")
        bob, bob_out = self.connect("bob")
        paste = b"".join(b"line %d\n" % n for n in range(1, 31))
        for start in range(0, len(paste), 7):  # odd-sized reads, lines cut in the middle
            alice.dataReceived(paste[start:start + 7])
        self.clock.pump([0.05] * 30)
        self.assertEqual(self.lines(bob_out), [f"alice: line {n}" for n in range(1, 31)])


class PeerNameTests(SynchronousTestCase):
    """Log lines about a TCP user name its address and port."""

    def test_peer_names(self):
        from twisted.internet.address import IPv6Address

        self.assertEqual(peer_name(IPv4Address("TCP", "127.0.0.1", 50000)), "127.0.0.1:50000")
        self.assertEqual(peer_name(IPv6Address("TCP", "::1", 50000)), "[::1]:50000")
        clock = Clock()
        factory = LineChatFactory(Hub(clock), NickRegistry(), clock, Admission(10, 10))
        proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.7", 4242))
        self.assertEqual(proto.peer, "10.0.0.7:4242")


class PasteLoopbackTests(TestCase):
    """The real service on a real socket, with its default flood limits."""

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.service, self.port = support.start_chat_server(reactor)
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def join(self, nick):
        user = yield support.connect(self.reactor, self.port)
        self.addCleanup(user.close)
        return (yield support.log_in(user, nick, b"\r\n"))

    @defer.inlineCallbacks
    def test_thirty_line_paste_arrives_whole_and_in_order(self):
        alice = yield self.join("alice")
        bob = yield self.join("bob")
        yield alice.read_until("* bob joined")
        alice.send(b"".join(b"paste line %d\r\n" % n for n in range(1, 31)))
        received = yield bob.read_lines(30)
        self.assertEqual(received, [f"alice: paste line {n}" for n in range(1, 31)])
        self.assertEqual((yield alice.next_line()), SLOWED)
