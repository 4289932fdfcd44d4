"""
Certificate reload: a TLS listener serves the certificate loaded last to new connections,
keeps open ones on theirs, and keeps its certificate when the new files are broken.
Certificates come from trustme.  The in-process tests use the real service on loopback;
the last one sends a real SIGHUP to a real twistd.
"""

import os
import shutil
import tempfile

import trustme
from twisted.internet import defer, endpoints, ssl
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice import tap
from chatservice.certs import ReloadableCertificate, reloadable_endpoint
from tests import support
from tests.test_ops import EXIT_WAIT, START_WAIT, _TwistdHarness

HOST = "chat.example"


class Certificates:
    """A CA of the test's own and the key files a server reads, rewritten at will."""

    def make_files(self):
        self.folder = tempfile.mkdtemp(prefix="chatroom-certs-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.ca = trustme.CA()
        self.ca_file = os.path.join(self.folder, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.key_file = os.path.join(self.folder, "key.pem")
        self.cert_file = os.path.join(self.folder, "cert.pem")
        return self.issue()

    def issue(self):
        """A new certificate for HOST in the server's files; return its serial number."""
        issued = self.ca.issue_cert(HOST)
        issued.private_key_pem.write_to_path(self.key_file)
        issued.cert_chain_pems[0].write_to_path(self.cert_file)
        from cryptography import x509

        return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).serial_number

    def description(self):
        return f"ssl:0:interface=127.0.0.1:privateKey={self.key_file}:certKey={self.cert_file}"


class ReloadableCertificateTests(Certificates, SynchronousTestCase):
    def setUp(self):
        self.make_files()

    def test_reload_takes_the_new_files(self):
        certificate = ReloadableCertificate(self.key_file, self.cert_file)
        first = certificate.getContext()
        self.issue()
        with capturedLogs() as logs:
            self.assertTrue(certificate.reload())
        self.assertIsNot(certificate.getContext(), first)
        self.assertIn("O=trustme", certificate.subject)
        self.assertTrue(any("Reloaded the TLS certificate" in e["log_format"] for e in logs))

    def test_broken_files_keep_the_old_certificate(self):
        certificate = ReloadableCertificate(self.key_file, self.cert_file)
        context = certificate.getContext()
        other = trustme.CA().issue_cert(HOST)
        for breaking in (
            lambda: open(self.cert_file, "wb").write(b"not a certificate"),
            lambda: other.private_key_pem.write_to_path(self.key_file),  # not the cert's key
            lambda: os.remove(self.cert_file),
        ):
            self.issue()
            breaking()
            with capturedLogs() as logs:
                self.assertFalse(certificate.reload())
            self.assertIs(certificate.getContext(), context)
            [error] = [e for e in logs if "Could not reload" in e["log_format"]]
            self.assertEqual(error["log_level"].name, "error")

    def test_endpoint_descriptions(self):
        endpoint, certificate = reloadable_endpoint(None, self.description())
        self.assertIsInstance(endpoint, endpoints.SSL4ServerEndpoint)
        self.assertEqual(certificate.paths, (self.key_file, self.cert_file, None))
        endpoint, certificate = reloadable_endpoint(None, "tcp:0")
        self.assertIsInstance(endpoint, endpoints.TCP4ServerEndpoint)
        self.assertIsNone(certificate)
        with self.assertRaises(ValueError):
            reloadable_endpoint(None, self.description() + ":dhParameters=dh.pem")


class ServiceReloadTests(Certificates, TestCase):
    """The real service with TLS on line chat, IRC and the web, on loopback."""

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.serials = [self.make_files()]
        options = tap.Options()
        options.parseOptions(["--tcp", self.description(), "--udp", "off",
                              "--irc", self.description(), "--web", self.description(),
                              "--history", "none"])
        recorder = support.ListenRecorder(reactor)
        self.service = tap.makeService(options, reactor=recorder)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.ports = [port.getHost().port for port in recorder.ssl_ports]
        self.assertEqual(len(self.ports), 3)

    @defer.inlineCallbacks
    def connect(self, port):
        """A TLS line user that checks the certificate against our CA; (user, serial)."""
        trust = ssl.Certificate.loadPEM(self.ca.cert_pem.bytes())
        endpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS(HOST, trust),
            endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", port))
        user = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        self.addCleanup(user.close)
        # Something the server answers, so the handshake is surely over: the line chat
        # greets, IRC answers a PING, the web a request.
        if port == self.ports[1]:
            user.send(b"PING :x\r\n")
        elif port == self.ports[2]:
            user.send(b"GET /nothing HTTP/1.0\r\n\r\n")
        yield user.next_line()
        serial = user.transport.getPeerCertificate().get_serial_number()
        return user, serial

    @defer.inlineCallbacks
    def test_new_connections_get_the_new_certificate_open_ones_stay(self):
        old_user, serial = yield self.connect(self.ports[0])
        self.assertEqual(serial, self.serials[0])
        new = self.issue()
        self.assertEqual(self.service.reload_certificates(), (3, 0))
        for port in self.ports:
            _, serial = yield self.connect(port)
            self.assertEqual(serial, new)
        old_user.send(b"alice\n")  # the connection made before goes on
        self.assertEqual((yield old_user.read_until("* type /help for commands"))[-1],
                         "* type /help for commands")

    @defer.inlineCallbacks
    def test_broken_new_files_are_logged_and_the_old_certificate_stays(self):
        open(self.cert_file, "wb").write(b"garbage")
        with capturedLogs() as logs:
            self.assertEqual(self.service.reload_certificates(), (0, 3))
        self.assertEqual(len([e for e in logs if "Could not reload" in e["log_format"]]), 3)
        for port in self.ports:
            _, serial = yield self.connect(port)
            self.assertEqual(serial, self.serials[0])


class SighupTests(Certificates, _TwistdHarness):
    """A real twistd, a real SIGHUP."""

    @defer.inlineCallbacks
    def test_sighup_reloads(self):
        first = self.make_files()
        server = self.twistd("-n", "--pidfile=", "chatroom", "--tcp", self.description(),
                             "--udp", "off", "--irc", "off", "--web", "off", "--history", "none")
        match = yield server.wait_for_output(
            rb"TLS line chat listening on 127\.0\.0\.1:(\d+)\n", START_WAIT)
        port = int(match.group(1))
        second = self.issue()
        server.transport.signalProcess("HUP")
        yield server.wait_for_output(rb"SIGHUP: 1 TLS certificate\(s\) reloaded, 0 kept", START_WAIT)
        trust = ssl.Certificate.loadPEM(self.ca.cert_pem.bytes())
        endpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS(HOST, trust),
            endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", port))
        user = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        yield user.next_line()
        self.assertEqual(user.transport.getPeerCertificate().get_serial_number(), second)
        self.assertNotEqual(first, second)
        yield user.close()
        server.transport.signalProcess("TERM")
        self.assertEqual((yield server.wait_for_exit(EXIT_WAIT)), 0)
