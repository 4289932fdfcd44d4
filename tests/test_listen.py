"""Tests for L{chatservice.listen}: what C{--tcp} and C{--udp} accept."""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.listen import DatagramAddress, datagram_address, stream_description


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
