"""
Tests for L{chatservice.listen}: what C{--tcp} and C{--udp} accept, and the
listeners: one log line each saying where they really listen, one critical
line when they cannot.  The listeners are tested on real loopback sockets.
"""

import os
import shutil
import socket
import tempfile

from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice.listen import (
    DatagramAddress,
    DatagramListener,
    ListenFailed,
    StreamListener,
    address_text,
    datagram_address,
    stream_description,
    stream_kind,
)
from tests import support


class StreamDescriptionTests(SynchronousTestCase):
    """C{--tcp}: a bare port becomes C{tcp:PORT:backlog=1024}; endpoint strings are kept."""

    def test_bare_port(self):
        self.assertEqual(stream_description("12345"), "tcp:12345:backlog=1024")

    def test_bare_port_with_spaces(self):
        self.assertEqual(stream_description(" 12345 "), "tcp:12345:backlog=1024")

    def test_port_zero_and_highest(self):
        self.assertEqual(stream_description("0"), "tcp:0:backlog=1024")
        self.assertEqual(stream_description("65535"), "tcp:65535:backlog=1024")

    def test_endpoint_strings_kept(self):
        for spec in (
            "tcp:12345",
            "tcp:0:interface=127.0.0.1",
            "tcp6:port=12345:interface=\\:\\:1",
            "ssl:6697:privateKey=key.pem:certKey=cert.pem",
            "unix:/tmp/chat.sock",
        ):
            self.assertEqual(stream_description(spec), spec)

    def test_off(self):
        for spec in ("off", "OFF", "none", "no", " off "):
            self.assertIsNone(stream_description(spec), spec)

    def test_bad_ports(self):
        for spec in ("", "abc", "65536", "99999", "-1", "12.5", "1e3", "port"):
            with self.assertRaises(ValueError, msg=spec) as raised:
                stream_description(spec)
            self.assertIn("--tcp", str(raised.exception))


class DatagramAddressTests(SynchronousTestCase):
    """C{--udp}: a port or C{udp:PORT[:interface=ADDR]}."""

    def test_bare_port(self):
        self.assertEqual(datagram_address("12346"), DatagramAddress(12346, ""))

    def test_udp_port(self):
        self.assertEqual(datagram_address("udp:12346"), DatagramAddress(12346, ""))

    def test_udp_port_interface(self):
        self.assertEqual(
            datagram_address("udp:12346:interface=127.0.0.1"),
            DatagramAddress(12346, "127.0.0.1"),
        )

    def test_keyword_port_ipv6_interface_keeps_colons(self):
        self.assertEqual(
            datagram_address("udp:port=1:interface=::1"), DatagramAddress(1, "::1")
        )

    def test_full_ipv6_interface(self):
        self.assertEqual(
            datagram_address("udp:12346:interface=fe80::1:2:3"),
            DatagramAddress(12346, "fe80::1:2:3"),
        )

    def test_interface_first(self):
        self.assertEqual(
            datagram_address("udp:port=7:interface=0.0.0.0"), DatagramAddress(7, "0.0.0.0")
        )

    def test_port_zero(self):
        self.assertEqual(datagram_address("udp:0:interface=127.0.0.1").port, 0)

    def test_default_interface_is_every_address(self):
        self.assertEqual(DatagramAddress(5).interface, "")

    def test_off(self):
        for spec in ("off", "Off", "none", "no"):
            self.assertIsNone(datagram_address(spec), spec)

    def test_bad_forms(self):
        for spec in (
            "",
            "abc",
            "65536",
            "-5",
            "tcp:12346",
            "udp",
            "udp:",
            "udp:abc",
            "udp:70000",
            "udp:port=",
            "udp:port=x",
            "udp:interface=127.0.0.1",
            "udp:12346:interface=",
            "udp:12346:bogus=1",
            "udp:12346:backlog=5",
        ):
            with self.assertRaises(ValueError, msg=spec) as raised:
                datagram_address(spec)
            self.assertIn("--udp", str(raised.exception), spec)


class NamingTests(SynchronousTestCase):
    """How the log names a listener and its address."""

    def test_stream_kinds(self):
        for description, kind in (
            ("tcp:12345:backlog=1024", "TCP"),
            ("tcp6:port=1:interface=\\:\\:1", "TCP"),
            ("ssl:6697:privateKey=k.pem:certKey=c.pem", "TLS"),
            ("unix:/tmp/chat.sock", "UNIX"),
            ("systemd:domain=INET:index=0", "SYSTEMD"),
        ):
            self.assertEqual(stream_kind(description), kind, description)

    def test_addresses(self):
        self.assertEqual(address_text(IPv4Address("TCP", "0.0.0.0", 12345)), "0.0.0.0:12345")
        self.assertEqual(address_text(IPv6Address("TCP", "::1", 12345)), "[::1]:12345")
        self.assertEqual(address_text(UNIXAddress(b"/tmp/chat.sock")), "/tmp/chat.sock")


class _Silent(Protocol):
    pass


class ListenerTests(TestCase):
    """Real listeners on 127.0.0.1: the port they report, their log, their stop."""

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def started(self, listener):
        """Start C{listener} (as twistd would) and stop it in cleanup; return its log."""
        with capturedLogs() as events:
            listener.privilegedStartService()
            listener.startService()
        self.addCleanup(listener.stopService)
        return events

    def listening_lines(self, events):
        return [
            (e["log_level"], e["kind"], e["what"], e["address"])
            for e in events
            if "listening on" in e["log_format"]
        ]

    def test_tcp_port_0_logs_the_real_port(self):
        listener = StreamListener(
            self.reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(_Silent)
        )
        events = self.started(listener)
        port = listener.port.getHost().port
        self.assertNotEqual(port, 0)
        self.assertEqual(
            self.listening_lines(events),
            [(LogLevel.info, "TCP", "line chat", f"127.0.0.1:{port}")],
        )

    def test_udp_port_0_logs_the_real_port(self):
        listener = DatagramListener(
            self.reactor, DatagramAddress(0, "127.0.0.1"), DatagramProtocol(), max_packet_size=1300
        )
        events = self.started(listener)
        port = listener.port.getHost().port
        self.assertNotEqual(port, 0)
        self.assertEqual(
            self.listening_lines(events), [(LogLevel.info, "UDP", "chat", f"127.0.0.1:{port}")]
        )
        self.assertEqual(listener.port.maxPacketSize, 1300)

    def test_tls_logs_its_port(self):
        import trustme

        certificate = trustme.CA().issue_cert("127.0.0.1")
        directory = tempfile.mkdtemp(prefix="chatroom-tls-")
        self.addCleanup(shutil.rmtree, directory)
        pem = os.path.join(directory, "server.pem")
        certificate.private_key_and_cert_chain_pem.write_to_path(pem)
        listener = StreamListener(
            self.reactor,
            f"ssl:0:interface=127.0.0.1:privateKey={pem}:certKey={pem}",
            Factory.forProtocol(_Silent),
        )
        events = self.started(listener)
        port = listener.port.getHost().port
        self.assertNotEqual(port, 0)
        self.assertEqual(
            self.listening_lines(events),
            [(LogLevel.info, "TLS", "line chat", f"127.0.0.1:{port}")],
        )

    def test_unix_logs_its_path(self):
        directory = tempfile.mkdtemp(prefix="chatroom-unix-")
        path = os.path.join(directory, "chat.sock")
        self.addCleanup(os.rmdir, directory)
        listener = StreamListener(self.reactor, f"unix:{path}", Factory.forProtocol(_Silent))
        events = self.started(listener)
        self.assertEqual(
            self.listening_lines(events), [(LogLevel.info, "UNIX", "line chat", path)]
        )

    def held(self, kind):
        """A socket bound to a free 127.0.0.1 port, closed in cleanup; return the port."""
        holder = socket.socket(socket.AF_INET, kind)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        return holder.getsockname()[1]

    def assert_cannot_listen(self, listener, kind, port):
        with capturedLogs() as events:
            error = self.assertRaises(ListenFailed, listener.privilegedStartService)
        self.assertIsInstance(error, CannotListenError)
        self.assertEqual(str(error), f"{kind} port {port} on 127.0.0.1: address already in use")
        self.assertEqual(self.listening_lines(events), [])
        [line] = events
        self.assertEqual(line["log_level"], LogLevel.critical)
        self.assertEqual(
            (line["kind"], line["where"], line["reason"]),
            (kind, f"port {port} on 127.0.0.1", "address already in use"),
        )
        self.assertIsNone(listener.port)
        self.assertIsNone(listener.stopService())

    def test_tcp_port_in_use(self):
        port = self.held(socket.SOCK_STREAM)
        listener = StreamListener(
            self.reactor, f"tcp:{port}:interface=127.0.0.1", Factory.forProtocol(_Silent)
        )
        self.assert_cannot_listen(listener, "TCP", port)

    def test_udp_port_in_use(self):
        port = self.held(socket.SOCK_DGRAM)
        listener = DatagramListener(
            self.reactor, DatagramAddress(port, "127.0.0.1"), DatagramProtocol()
        )
        self.assert_cannot_listen(listener, "UDP", port)

    def test_listens_once(self):
        """twistd calls privilegedStartService, then startService: one socket, one line."""
        listener = StreamListener(
            self.reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(_Silent)
        )
        events = self.started(listener)
        self.assertEqual(len(self.listening_lines(events)), 1)

    @defer.inlineCallbacks
    def test_stop_closes_the_socket(self):
        listener = StreamListener(
            self.reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(_Silent)
        )
        listener.startService()
        port = listener.port.getHost().port
        user = yield support.connect(self.reactor, port)
        yield user.close()
        yield listener.stopService()
        self.assertFalse(listener.running)
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", port, timeout=5)
        attempt = endpoints.connectProtocol(endpoint, _Silent())
        yield self.assertFailure(attempt, ConnectionRefusedError)
