"""
chatroom-client --tls: the real client process against the real service
listening on an C{ssl:} endpoint on 127.0.0.1, with certificates from trustme.

The client must verify the server's certificate against the host name it
was given, trusting --cafile or else the system's store: a good certificate
chats, a certificate for another name or from an unknown CA ends the client
with exit 1 and one plain message.
"""

import os
import shutil
import tempfile

import trustme
from twisted.internet import defer, endpoints, ssl
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.python import usage

from chatservice import tap
from chatservice.client import Options
from tests import support

GREETING = support.GREETING


class TempFiles:
    """Files in a directory of their own, removed after the test, outside the source tree."""

    def temp_path(self, name):
        if not hasattr(self, "_temp_dir"):
            self._temp_dir = tempfile.mkdtemp(prefix="chatroom-client-tls-")
            self.addCleanup(shutil.rmtree, self._temp_dir, True)
        return os.path.join(self._temp_dir, name)

    def write_pem(self, name, blob):
        """Write C{blob} (a trustme PEM blob) to a new file; return its absolute path."""
        path = self.temp_path(name)
        blob.write_to_path(path)
        return path


class TlsClientTests(TempFiles, TestCase):
    """The client over TLS, as a process, against the service on an ssl: endpoint."""

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.ca = trustme.CA()
        self.ca_file = self.write_pem("ca.pem", self.ca.cert_pem)

    def start_server(self, *names):
        """The real service on ssl:0 with a certificate for C{names}; return its port."""
        server_cert = self.ca.issue_cert(*names)
        key_file = self.write_pem("server.pem", server_cert.private_key_and_cert_chain_pem)
        options = tap.Options()
        options.parseOptions([
            "--tcp", f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={key_file}",
            "--udp", "off", "--irc", "off", "--web", "off", "--history", "none",
        ])
        recorder = support.ListenRecorder(self.reactor)
        service = tap.makeService(options, reactor=recorder)
        service.startService()
        self.addCleanup(service.stopService)
        [port] = recorder.ssl_ports
        return port.getHost().port

    @defer.inlineCallbacks
    def tls_user(self, port, nick):
        """A line user over TLS (as C{openssl s_client} would be), joined as C{nick}."""
        endpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("localhost", ssl.Certificate.loadPEM(self.ca.cert_pem.bytes())),
            endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", port, timeout=support.WAIT),
        )
        user = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        self.addCleanup(user.close)
        return (yield support.log_in(user, nick))

    def run_client(self, *args):
        process = support.spawn(self.reactor, support.client_argv(*args))
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def test_piped_client_chats_over_tls_and_exits_0(self):
        port = self.start_server("localhost")
        alice = yield self.tls_user(port, "alice")
        bot = self.run_client(
            "--tls", "--cafile", self.ca_file, "--host", "localhost",
            "--port", str(port), "--name", "bot",
        )
        bot.transport.write(b"hello over tls\n")
        bot.transport.closeStdin()
        self.assertEqual(
            (yield alice.read_lines(3)),
            ["* bot joined", "bot: hello over tls", "* bot left (quit)"],
        )
        self.assertEqual((yield bot.wait_for_exit()), 0)
        self.assertEqual(
            bot.out.decode().splitlines(),
            [GREETING, "* you are bot; 2 in #lobby: alice, bot", "* type /help for commands",
             "* goodbye"],
        )
        self.assertEqual(bot.err, b"")

    @defer.inlineCallbacks
    def assert_rejected(self, port, why, *extra):
        bot = self.run_client(
            "--tls", *extra, "--host", "localhost", "--port", str(port), "--name", "bot",
        )
        self.assertEqual((yield bot.wait_for_exit()), 1)
        self.assertEqual(bot.out, b"")
        self.assertNotIn(b"Traceback", bot.output)
        self.assertEqual(
            bot.err.decode(),
            f"chatroom-client: TLS with localhost:{port} failed: certificate verification"
            f" failed: {why}\n",
        )

    def test_certificate_for_another_host_name_is_rejected(self):
        port = self.start_server("chat.example.org")
        return self.assert_rejected(
            port, "the server's certificate is not valid for localhost", "--cafile", self.ca_file
        )

    def test_unknown_ca_is_rejected_without_cafile(self):
        """trustme's CA is in no system store: the default trust must refuse it."""
        port = self.start_server("localhost")
        return self.assert_rejected(
            port, "the server's certificate is not signed by a trusted CA"
        )

    def test_another_ca_in_cafile_is_rejected(self):
        port = self.start_server("localhost")
        other = self.write_pem("other-ca.pem", trustme.CA().cert_pem)
        return self.assert_rejected(
            port, "the server's certificate is not signed by a trusted CA", "--cafile", other
        )

    @defer.inlineCallbacks
    def test_cafile_with_several_certificates(self):
        port = self.start_server("localhost")
        bundle = self.temp_path("bundle.pem")
        with open(bundle, "wb") as f:
            f.write(trustme.CA().cert_pem.bytes() + self.ca.cert_pem.bytes())
        bot = self.run_client(
            "--tls", "--cafile", bundle, "--host", "localhost", "--port", str(port),
            "--name", "bot",
        )
        bot.transport.closeStdin()
        self.assertEqual((yield bot.wait_for_exit()), 0)
        self.assertEqual(bot.out.decode().splitlines()[-1], "* goodbye")


class TlsOptionsTests(TempFiles, SynchronousTestCase):
    """--tls and --cafile on the command line."""

    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_tls_off_by_default(self):
        options = self.parse("--name", "bot")
        self.assertEqual((options["tls"], options["cafile"], options["trust"]), (False, None, None))

    def test_tls_with_system_trust(self):
        options = self.parse("--name", "bot", "--tls")
        self.assertEqual((options["tls"], options["trust"], options["port"]), (True, None, 12345))

    def test_cafile_loaded(self):
        ca = trustme.CA()
        path = self.write_pem("ca.pem", ca.cert_pem)
        trust = self.parse("--name", "bot", "--tls", "--cafile", path)["trust"]
        self.assertEqual(trust, ssl.Certificate.loadPEM(ca.cert_pem.bytes()))

    def test_tls_with_udp_is_a_usage_error(self):
        error = self.assertRaises(usage.UsageError, self.parse, "--name", "bot", "--tls", "--udp")
        self.assertEqual(str(error), "--tls works over TCP only, not with --udp")

    def test_cafile_needs_tls(self):
        path = self.write_pem("ca.pem", trustme.CA().cert_pem)
        error = self.assertRaises(usage.UsageError, self.parse, "--name", "bot", "--cafile", path)
        self.assertEqual(str(error), "--cafile needs --tls")

    def test_missing_cafile(self):
        path = self.temp_path("ca.pem")
        error = self.assertRaises(
            usage.UsageError, self.parse, "--name", "bot", "--tls", "--cafile", path
        )
        self.assertEqual(str(error), f"cannot read --cafile {path}: No such file or directory")

    def test_cafile_without_certificate(self):
        path = self.temp_path("ca.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        error = self.assertRaises(
            usage.UsageError, self.parse, "--name", "bot", "--tls", "--cafile", path
        )
        self.assertEqual(str(error), f"--cafile {path} holds no PEM certificate")

    def test_cafile_with_a_broken_certificate(self):
        path = self.temp_path("ca.pem")
        with open(path, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        error = self.assertRaises(
            usage.UsageError, self.parse, "--name", "bot", "--tls", "--cafile", path
        )
        self.assertEqual(str(error), f"--cafile {path} holds a certificate that cannot be read")
