"""Property tests: no byte string a client sends can crash a transport or reach others raw.

Hypothesis feeds arbitrary bytes through the TCP line handling and the UDP
datagram handling; the other users' output must stay free of control
characters (other than the CRLF that ends each TCP line).
"""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.line import LineChatFactory
from chatservice.frontends.udp import DatagramChat

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]")
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Bytes that matter most: newlines, CR, ESC, IAC, C1 lead bytes, invalid UTF-8.
_interesting = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b"\x1b[31m", b"\x1b]0;owned\x07", b"\xff\xfb\x01", b"\xff\xff",
     b"\xc2\x9b2J", b"\x9b", b"\x00", b"\x7f", b"\xe2\x80\xae", b"/me ", b"/nick ", b"/msg bob ",
     b"//", b"\xf0\x9f", b"\xed\xa0\x80"]
)
_chunks = st.lists(st.one_of(st.binary(max_size=64), _interesting), max_size=40)


class Addr:
    def __init__(self, host):
        self.host = host


def relayed_lines(raw: bytes):
    """Split TCP output into lines, dropping the CRLF ends."""
    assert raw == b"" or raw.endswith(b"\r\n"), raw
    return raw.split(b"\r\n")[:-1]


class World:
    def __init__(self, max_line=64):
        self.clock = Clock()
        self.limits = Limits(flood=FloodPolicy(rate=0), max_line=max_line)
        self.hub = Hub(self.clock)
        self.registry = NickRegistry()
        self.admission = Admission(0, 0)
        self.factory = LineChatFactory(
            self.hub, self.registry, self.clock, self.admission, self.limits
        )

    def tcp(self, nick):
        proto = self.factory.buildProtocol(Addr("127.0.0.1"))
        out = StringTransport()
        proto.makeConnection(out)
        if nick:
            proto.dataReceived(nick + b"\n")
        self.clock.advance(0)
        out.clear()
        return proto, out


class TcpHostileInputTests(SynchronousTestCase):
    @PROPERTY_SETTINGS
    @given(chunks=_chunks, joined=st.booleans())
    def test_arbitrary_bytes_never_raise_nor_relay_controls(self, chunks, joined):
        world = World()
        watcher, watcher_out = world.tcp(b"watcher")
        hostile, hostile_out = world.tcp(b"hostile" if joined else b"")
        for chunk in chunks:
            hostile.dataReceived(chunk)
            world.clock.advance(0)
        for line in relayed_lines(watcher_out.value()):
            self.assertIsNone(_CONTROL.search(line), line)
            line.decode("utf-8")  # valid UTF-8 always
        answers = re.sub(rb"\xff[\xfb-\xfe].", b"", hostile_out.value(), flags=re.DOTALL)
        for line in relayed_lines(answers):
            self.assertIsNone(_CONTROL.search(line), line)
        self.assertFalse(watcher_out.disconnecting)

    @PROPERTY_SETTINGS
    @given(size=st.integers(min_value=65, max_value=5000), split=st.integers(1, 4000))
    def test_over_long_lines_are_refused_and_the_next_line_works(self, size, split):
        world = World(max_line=64)
        watcher, watcher_out = world.tcp(b"watcher")
        sender, sender_out = world.tcp(b"sender")
        watcher_out.clear()
        data = b"x" * size + b"\nafter\n"
        split = min(split, len(data))
        sender.dataReceived(data[:split])
        self.assertLessEqual(len(sender._buffer), 64 + 1 + split)
        sender.dataReceived(data[split:])
        world.clock.advance(0)
        self.assertEqual(sender_out.value(), b"! line too long (max 64 bytes)\r\n")
        self.assertEqual(watcher_out.value(), b"sender: after\r\n")


_datagrams = st.lists(
    st.one_of(
        st.binary(max_size=80), _interesting,
        st.builds(lambda n, b: b"%d " % n + b, st.integers(0, 300), st.binary(max_size=40)),
        st.sampled_from([b"HELLO", b"HELLO xx", b"JOIN", b"JOIN a b", b"ACK 1 2 3", b"PING",
                         b"ACK 99999999999", b"ACK 2147483648", b"BYE", b"1 /nick x",
                         b"4294967295 x", b"0 x"]),
    ),
    max_size=40,
)


class UdpHostileInputTests(SynchronousTestCase):
    """
    Arbitrary datagrams from a stranger get at most a small TOKEN; from a joined address without
    its session secret they get nothing at all; with the secret they never reach anyone raw, and
    every answer starts with the secret.
    """

    class Wire:
        def __init__(self):
            self.written = []

        def write(self, datagram, address):
            self.written.append((datagram, address))

    member, stranger = ("127.0.0.1", 5000), ("127.0.0.1", 6000)

    def joined_world(self):
        """A TCP watcher and a UDP member who has joined and acknowledged everything."""
        world = World()
        world.watcher, world.watcher_out = world.tcp(b"watcher")
        chat = DatagramChat(world.hub, world.registry, world.clock, world.admission,
                            world.limits, secret=b"s")
        wire = self.Wire()
        chat.makeConnection(wire)
        chat.datagramReceived(b"HELLO member", self.member)
        token = wire.written.pop()[0].split()[1].strip()
        chat.datagramReceived(b"JOIN " + token + b" member", self.member)
        world.clock.advance(0)
        session, *numbered = [d.rstrip(b"\n") for d, a in wire.written if a == self.member]
        self.assertTrue(session.startswith(b"SESSION "), session)
        world.secret = session.split()[1]
        chat.datagramReceived(world.secret + b" ACK %d" % len(numbered), self.member)
        world.clock.advance(0)
        wire.written.clear()
        world.watcher_out.clear()
        world.chat, world.wire = chat, wire
        return world

    def assert_nothing_raw(self, world):
        for line in relayed_lines(world.watcher_out.value()):
            self.assertIsNone(_CONTROL.search(line), line)
        for datagram, address in world.wire.written:
            self.assertIsNone(_CONTROL.search(datagram.rstrip(b"\n")), datagram)

    @PROPERTY_SETTINGS
    @given(datagrams=_datagrams)
    def test_datagrams_without_the_secret_never_raise_nor_get_a_reply(self, datagrams):
        world = self.joined_world()
        chat = world.chat
        (peer,) = chat.peers()
        heard = peer.last_heard
        sent_by_stranger = 0
        for datagram in datagrams:
            chat.datagramReceived(datagram, self.member)
            chat.datagramReceived(datagram, self.stranger)
            sent_by_stranger += len(datagram)
            world.clock.advance(0.01)
        to_member = [d for d, a in world.wire.written if a == self.member]
        self.assertEqual(to_member, [])
        to_stranger = [d for d, a in world.wire.written if a == self.stranger]
        self.assertLessEqual(sum(map(len, to_stranger)), 3 * sent_by_stranger)
        self.assertTrue(all(d.startswith(b"TOKEN ") for d in to_stranger), to_stranger)
        self.assertEqual(chat.peers(), [peer])
        self.assertEqual(peer.last_heard, heard)
        self.assertEqual(world.watcher_out.value(), b"")
        chat.stopProtocol()

    @PROPERTY_SETTINGS
    @given(datagrams=_datagrams)
    def test_datagrams_with_the_secret_never_raise_nor_relay_controls(self, datagrams):
        world = self.joined_world()
        for datagram in datagrams:
            world.chat.datagramReceived(world.secret + b" " + datagram, self.member)
            world.clock.advance(0.01)
        self.assert_nothing_raw(world)
        to_member = [d for d, a in world.wire.written if a == self.member]
        self.assertTrue(all(d.startswith(world.secret + b" ") for d in to_member), to_member)
        world.chat.stopProtocol()
