"""
Shutdown on real sockets: the TCP listener closes before the goodbyes, so a
connection that comes during the grace is refused by the kernel; the UDP
socket stays open until the goodbyes are done.

The service runs on trial's reactor (C{tap.makeService}, 127.0.0.1, port 0).
The grace is held open by one extra participant whose goodbye finishes only
when the test says, so "during the grace" is an event, not a time.
"""

import socket

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from chatservice import tap
from chatservice.core.interfaces import IParticipant
from chatservice.core.session import Session
from tests import support

GREETING = "* welcome to chatroom, what is your nickname?"


@implementer(IParticipant)
class HeldGoodbye:
    """
    A participant whose goodbye starts when the service says it and ends when
    the test calls L{finish}: it holds the shutdown grace open.

    @ivar asked: fires (with the reason) once the service has said goodbye.
    """

    nick = None
    via = "fake"
    echo = False
    peer = "192.0.2.4:40000"
    room = None

    def __init__(self):
        self.asked = defer.Deferred()
        self._gone = defer.Deferred()

    def deliver(self, events):
        pass

    def pause_input(self):
        pass

    def resume_input(self):
        pass

    def close(self, reason):
        self.asked.callback(reason)
        return self._gone

    def finish(self):
        if not self._gone.called:
            self._gone.callback(None)


class _UDPProbe(DatagramProtocol):
    """Sends datagrams to the server and collects what comes back."""

    def __init__(self, clock):
        self.received = []
        self._waiters = support.Waiters(clock)

    def datagramReceived(self, datagram, address):
        self.received.append(datagram)
        self._waiters.changed()

    def wait_for(self, prefix: bytes):
        """Fire with the first datagram received that starts with C{prefix}."""

        def check():
            return next((d for d in self.received if d.startswith(prefix)), None)

        return self._waiters.wait(check, support.WAIT, lambda: f"received {self.received!r}")


class StopAcceptingTests(TestCase):
    """During the shutdown grace the TCP listener is gone; the UDP port is not."""

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def hold_the_grace(self, service):
        """Connect a L{HeldGoodbye} (no nick chosen); release it in cleanup whatever happens."""
        held = HeldGoodbye()
        Session(held, service.hub, service.registry, self.reactor).start()
        self.addCleanup(held.finish)
        return held

    def stop(self, service):
        """Stop C{service}; return its Deferred and a list that fills once it has stopped."""
        stopped = []
        stopping = service.stopService()
        stopping.addCallback(lambda result: stopped.append(True) or result)
        return stopping, stopped

    @defer.inlineCallbacks
    def test_tcp_connection_during_the_grace_is_refused(self):
        service, port = support.start_chat_server(self.reactor, "--shutdown-grace", "30")
        self.addCleanup(lambda: service.running and service.stopService())
        alice = yield support.connect(self.reactor, port)
        self.addCleanup(alice.close)
        self.assertEqual((yield alice.next_line()), GREETING)
        alice.send(b"alice\n")
        yield alice.read_until("* type /help for commands")
        held = self.hold_the_grace(service)

        stopping, stopped = self.stop(service)
        self.assertEqual((yield held.asked.addTimeout(support.WAIT, self.reactor)),
                         "server shutting down")
        self.assertEqual((yield alice.next_line()), "* server shutting down")
        try:
            late = yield support.connect(self.reactor, port)
        except ConnectionRefusedError:
            pass
        else:
            self.addCleanup(late.close)
            self.fail("a TCP connection made during the shutdown grace was accepted")
        self.assertEqual(stopped, [], "the grace should still be running")

        held.finish()
        yield stopping.addTimeout(support.WAIT, self.reactor)

    @defer.inlineCallbacks
    def test_udp_socket_stays_open_until_the_goodbyes_are_done(self):
        options = tap.Options()
        options.parseOptions(
            ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
             "--shutdown-grace", "30", "--history", "none"]
        )
        service = tap.makeService(options, reactor=self.reactor)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        [udp_port] = [
            int(e["address"].rpartition(":")[2])
            for e in events
            if e["log_format"].endswith("listening on {address}") and e["kind"] == "UDP"
        ]
        held = self.hold_the_grace(service)
        probe = _UDPProbe(self.reactor)
        client = self.reactor.listenUDP(0, probe, interface="127.0.0.1")
        self.addCleanup(client.stopListening)

        stopping, stopped = self.stop(service)
        yield held.asked.addTimeout(support.WAIT, self.reactor)
        client.write(b"HELLO from a probe\n", ("127.0.0.1", udp_port))
        token = yield probe.wait_for(b"TOKEN ")
        self.assertRegex(token, rb"^TOKEN [0-9a-f]{10}\n?$")
        self.assertEqual(stopped, [])

        held.finish()
        yield stopping.addTimeout(support.WAIT, self.reactor)
        # Now the UDP socket is closed: the port can be bound again.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rebind:
            rebind.bind(("127.0.0.1", udp_port))
