"""
L{direct_writer}: bytes go to the socket at once when Twisted holds nothing unsent, in order
with whatever it does hold, on real loopback connections; other transports get their own
C{write}.
"""

import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice.frontends.directwrite import direct_writer


class Accepted(protocol.Protocol):
    def connectionMade(self):
        self.factory.accepted.callback(self)

    def connectionLost(self, reason):
        self.factory.lost.callback(None)


class Connection(TestCase):
    """A Twisted server connection, and the plain blocking socket at its other end."""

    def setUp(self):
        factory = protocol.ServerFactory.forProtocol(Accepted)
        factory.accepted = defer.Deferred()
        factory.lost = defer.Deferred()
        self.factory = factory
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.peer = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        self.addCleanup(self.peer.close)

    @defer.inlineCallbacks
    def transport(self):
        accepted = yield self.factory.accepted
        return accepted.transport

    def read(self, count: int, timeout: float = 10.0) -> bytes:
        """Read exactly C{count} bytes from the peer socket (blocking, bounded)."""
        self.peer.settimeout(timeout)
        chunks, got = [], 0
        while got < count:
            chunk = self.peer.recv(count - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


class DirectWriteTests(Connection):
    @defer.inlineCallbacks
    def test_written_at_once_without_registering(self):
        """A write to a connection with nothing queued is sent now: the reactor is not asked to
        watch the socket for writing (with C{transport.write} it would be)."""
        transport = yield self.transport()
        write = direct_writer(transport)
        write(b"hello\r\n")
        self.assertNotIn(transport, reactor.getWriters())
        self.assertEqual(self.read(7), b"hello\r\n")

    @defer.inlineCallbacks
    def test_order_kept_when_the_kernel_is_full(self):
        """Past what the kernel takes, the rest is queued by Twisted, and later writes queue
        behind it: the peer reads every byte in order."""
        transport = yield self.transport()
        write = direct_writer(transport)
        blocks = [(b"%08d" % i) * 8192 for i in range(64)]  # 64 KiB each, 4 MiB in all
        for block in blocks:
            write(block)
        self.assertIn(transport, reactor.getWriters())  # the kernel did not take it all
        expected = b"".join(blocks)
        got = yield self._read_in_thread(len(expected))
        self.assertEqual(len(got), len(expected))
        self.assertTrue(got == expected)

    def _read_in_thread(self, count):
        from twisted.internet.threads import deferToThread

        return deferToThread(self.read, count, 30.0)

    @defer.inlineCallbacks
    def test_disconnecting_goes_through_transport(self):
        """Once the connection is closing, writes go through Twisted's queue, as
        C{transport.write} does: sent before the close, not sent directly."""
        transport = yield self.transport()
        write = direct_writer(transport)
        transport.loseConnection()
        write(b"late\r\n")
        self.assertIn(transport, reactor.getWriters())
        yield self.factory.lost
        self.assertEqual(self.read(100), b"late\r\n")


class FallbackTests(SynchronousTestCase):
    def test_other_transports_use_their_write(self):
        transport = StringTransport()
        self.assertEqual(direct_writer(transport), transport.write)
