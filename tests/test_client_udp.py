"""The bundled client's UDP mode, end to end in memory against the real UDP side.

Both ends run on one task.Clock and exchange datagrams through a fake wire,
which can lose everything to play an unreachable or vanished server.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    HANDSHAKE_INTERVAL,
    HANDSHAKE_TRIES,
    PING_INTERVAL,
    ChatClient,
    _UdpLink,
)
from chatservice.flood import FloodPolicy
from chatservice.limits import Admission, Limits
from chatservice.nicks import NickRegistry
from chatservice.room import Room
from chatservice.udp import DatagramChat

CLIENT, SERVER = ("127.0.0.1", 50001), ("127.0.0.1", 12346)


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
        self.assertEqual(self.printed[0], "! nickname uma is taken, try another")

    def test_unreachable_server_exits_1_after_bounded_tries(self):
        self.start(up=False)
        self.advance(HANDSHAKE_INTERVAL * (HANDSHAKE_TRIES + 1))
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        hellos = [d for d in self.wire.to_server if d.startswith(b"HELLO")]
        self.assertEqual(len(hellos), HANDSHAKE_TRIES)
        self.link.stop()
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])

    def test_idle_client_pings_and_is_never_expired(self):
        self.start()
        self.advance(PING_INTERVAL * 6, step=0.5)
        self.assertIn(b"PING", self.wire.to_server)
        self.assertEqual([nick for nick, _ in self.room.who()], ["uma"])

    def test_vanished_server_noticed(self):
        self.start()
        self.wire.up = False
        self.advance(PING_INTERVAL * 6, step=0.5)
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(self.printed[-1], "! server not answering")

    def test_shutdown_notice_then_bye_ends_with_0(self):
        self.start()
        self.room.close_all("server shutting down")
        self.advance(1)
        self.assertEqual(self.printed[-1], "* server shutting down")
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)
