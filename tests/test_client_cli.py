"""
chatroom-client's own command line: --help names the program, --version
prints chatroom's version, and impossible combinations are usage errors.

Each runs both ways a user starts the client: C{python -m chatservice.client}
from this tree, and the C{chatroom-client} console script installed in the
venv (reinstall the project first, as for test_e2e).
"""

import os
import sys

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from chatservice import __version__
from tests import support

SCRIPT = os.path.join(os.path.dirname(sys.executable), "chatroom-client")


class ClientCommandLineTests(TestCase):
    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def from_tree(self, *args):
        process = support.spawn(self.reactor, support.client_argv(*args))
        self.addCleanup(process.kill)
        return process

    def installed(self, *args):
        """The console script, importing the installed package (no PYTHONPATH of ours)."""
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        watcher = support.ProcessWatcher(self.reactor)
        self.reactor.spawnProcess(watcher, SCRIPT, [SCRIPT, *args], env=environment, path="/")
        self.addCleanup(watcher.kill)
        return watcher

    @defer.inlineCallbacks
    def check_help(self, process):
        self.assertEqual((yield process.wait_for_exit()), 0)
        self.assertEqual(process.err, b"")
        lines = process.out.decode().splitlines()
        self.assertEqual(
            lines[0],
            "Usage: chatroom-client --name NAME [--host HOST] [--port PORT]"
            " [--udp | --tls [--cafile FILE]]",
        )
        text = " ".join(process.out.decode().split())
        self.assertIn("the handshake must finish within 10 s", text)
        self.assertIn("the server has been silent for 30 s", text)

    def test_help_names_the_program_with_python_m(self):
        return self.check_help(self.from_tree("--help"))

    def test_help_names_the_program_as_console_script(self):
        return self.check_help(self.installed("--help"))

    @defer.inlineCallbacks
    def check_version(self, process):
        self.assertEqual((yield process.wait_for_exit()), 0)
        self.assertEqual(process.out.decode(), f"chatroom-client (chatroom) {__version__}\n")
        self.assertEqual(process.err, b"")

    def test_version_with_python_m(self):
        return self.check_version(self.from_tree("--version"))

    def test_version_as_console_script(self):
        return self.check_version(self.installed("--version"))

    @defer.inlineCallbacks
    def test_tls_with_udp_exits_64(self):
        process = self.from_tree("--name", "bot", "--udp", "--tls")
        self.assertEqual((yield process.wait_for_exit()), 64)
        self.assertEqual(process.out, b"")
        err = process.err.decode().splitlines()
        self.assertEqual(err[0], "chatroom-client: --tls works over TCP only, not with --udp")
        self.assertTrue(err[1].startswith("Usage: chatroom-client "), err)
