"""Over real loopback UDP, through a relay that loses 20% each way: nothing lost, nothing twice.

The bundled client (a subprocess, --udp) and a TCP user exchange 500 lines
each way.  The relay drops a seeded 20% of datagrams in each direction and
reorders some; every line must still arrive exactly once and in order.
"""

import os
import sys

from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase

from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.line import LineChatFactory
from chatservice.frontends.udp import DatagramChat
from tests.relay import LossyRelay

MESSAGES = 500
LOSS = 0.2
SEED = 20261124
TIMEOUT = 180


class Expectations:
    """Lines seen so far, and Deferreds that fire once a predicate on them holds."""

    def __init__(self):
        self.lines = []
        self._waiting = []

    def add(self, line):
        self.lines.append(line)
        still = []
        for predicate, d in self._waiting:
            if predicate(self.lines):
                d.callback(None)
            else:
                still.append((predicate, d))
        self._waiting = still

    def until(self, predicate, timeout=TIMEOUT):
        d = defer.Deferred()
        if predicate(self.lines):
            d.callback(None)
        else:
            self._waiting.append((predicate, d))
        return d.addTimeout(timeout, reactor)


class TcpUser(LineReceiver):
    delimiter = b"\n"

    def __init__(self):
        self.seen = Expectations()
        self.gone = defer.Deferred()

    def lineReceived(self, line):
        self.seen.add(line.rstrip(b"\r").decode())

    def connectionLost(self, reason):
        self.gone.callback(None)


class ClientProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.seen = Expectations()
        self.ended = defer.Deferred()
        self.errors = b""
        self._partial = b""

    def outReceived(self, data):
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.seen.add(line.decode())

    def errReceived(self, data):
        self.errors += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


def count_with(prefix):
    return lambda lines: sum(1 for line in lines if line.startswith(prefix)) >= MESSAGES


class LossyUdpTests(TestCase):
    log = Logger()

    @defer.inlineCallbacks
    def test_500_each_way_exactly_once_in_order(self):
        clock = reactor
        limits = Limits(flood=FloodPolicy(rate=0), max_per_ip=0)
        registry = NickRegistry()
        hub = Hub(clock)
        admission = Admission(limits.max_clients, limits.max_per_ip)
        tcp_port = reactor.listenTCP(
            0, LineChatFactory(hub, registry, clock, admission, limits), interface="127.0.0.1"
        )
        self.addCleanup(tcp_port.stopListening)
        chat = DatagramChat(hub, registry, clock, admission, limits)
        udp_port = reactor.listenUDP(
            0, chat, interface="127.0.0.1", maxPacketSize=chat.max_datagram_read
        )
        self.addCleanup(udp_port.stopListening)
        relay = LossyRelay(reactor, ("127.0.0.1", udp_port.getHost().port), loss=LOSS, seed=SEED)
        relay_port = reactor.listenUDP(0, relay, interface="127.0.0.1")
        self.addCleanup(relay_port.stopListening)
        self.addCleanup(relay.stop)

        tcp_user = yield protocol.ClientCreator(reactor, TcpUser).connectTCP(
            "127.0.0.1", tcp_port.getHost().port
        )
        self.addCleanup(lambda: tcp_user.transport.loseConnection())
        tcp_user.sendLine(b"tcpuser")
        yield tcp_user.seen.until(lambda lines: any(l.startswith("* you are") for l in lines), 10)

        client = ClientProcess()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        process = reactor.spawnProcess(
            client,
            sys.executable,
            [sys.executable, "-m", "chatservice.client", "--udp", "--name", "udpuser",
             "--port", str(relay_port.getHost().port)],
            env=env,
        )

        def kill():
            if process.pid is not None:
                process.signalProcess("KILL")

        self.addCleanup(kill)
        yield client.seen.until(lambda lines: any(l.startswith("* you are udpuser") for l in lines), 30)

        for i in range(MESSAGES):
            process.write(b"u2t %d\n" % i)
            tcp_user.sendLine(b"t2u %d" % i)
        yield defer.gatherResults([
            tcp_user.seen.until(count_with("udpuser: u2t ")),
            client.seen.until(count_with("tcpuser: t2u ")),
        ])
        (peer,) = chat.peers()
        server_sent, server_retransmitted = peer.channel.sent, peer.channel.retransmitted
        server_duplicates = peer.channel.duplicates
        process.closeStdin()
        code = yield client.ended.addTimeout(60, reactor)
        yield tcp_user.seen.until(lambda lines: "* udpuser left (quit)" in lines, 30)

        to_tcp = [l for l in tcp_user.seen.lines if l.startswith("udpuser: ")]
        to_udp = [l for l in client.seen.lines if l.startswith("tcpuser: ")]
        self.assertEqual(to_tcp, ["udpuser: u2t %d" % i for i in range(MESSAGES)])
        self.assertEqual(to_udp, ["tcpuser: t2u %d" % i for i in range(MESSAGES)])
        self.assertEqual(code, 0, client.errors)
        dropped, forwarded = relay.dropped, relay.forwarded
        self.assertGreater(dropped["up"], 0)
        self.assertGreater(dropped["down"], 0)
        sys.stderr.write(
            f"\nlossy relay: dropped {dropped['up']} of {dropped['up'] + forwarded['up']} "
            f"client->server and {dropped['down']} of {dropped['down'] + forwarded['down']} "
            f"server->client datagrams; server sent "
            f"{server_sent} lines with {server_retransmitted} retransmissions, "
            f"saw {server_duplicates} duplicate lines from the client (not shown)\n"
        )
