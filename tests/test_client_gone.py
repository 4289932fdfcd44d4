"""
The UDP client never hangs: real processes, real sockets, real ICMP.

A fake network cannot show this bug: on Linux's epoll (and poll) reactor an
ICMP "port unreachable" makes Twisted close the client's connected UDP port,
and the old client went on writing to a port that was gone (a traceback,
then nothing, for ever).  So these tests run the client from this tree as a
subprocess against a UDP port with nothing behind it, a port that never
answers, and a real C{twistd -n chatroom} (the installed one, as in
test_e2e) killed with SIGKILL under a joined client.
"""

import os
import shutil
import socket
import sys
import tempfile

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from chatservice.client import HANDSHAKE_TIMEOUT, PING_INTERVAL, SILENCE_LIMIT
from tests import support

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
#: Starting Python and Twisted, for the client or the server, on a busy machine.
STARTUP = 5.0
#: Reading a line, sending it, the ICMP coming back: well under a second on loopback.
PROMPTLY = 3.0


class Silent(DatagramProtocol):
    """A UDP port that takes everything and answers nothing."""

    def __init__(self):
        self.received = []

    def datagramReceived(self, datagram, address):
        self.received.append(datagram)


class ClientGoneTests(TestCase):
    timeout = 120

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def run_client(self, *args):
        process = support.spawn(self.reactor, support.client_argv(*args))
        self.addCleanup(process.kill)
        return process

    def assert_clean_exit_1(self, client, message):
        """Exit 1, C{message} as the one stderr line, no traceback anywhere."""
        self.assertEqual(client.exit_code, 1, client.output)
        self.assertNotIn(b"Traceback", client.output)
        self.assertEqual(client.err.decode(), f"chatroom-client: {message}\n")

    @defer.inlineCallbacks
    def test_nothing_listening_exits_1_at_once(self):
        """The ICMP port unreachable that used to kill the client's port ends it cleanly."""
        port = support.free_port(socket.SOCK_DGRAM)
        client = self.run_client("--udp", "--name", "bot", "--port", str(port))
        yield client.wait_for_exit(STARTUP + PROMPTLY)
        self.assert_clean_exit_1(
            client, f"cannot reach 127.0.0.1:{port} (UDP): nothing listens there (port unreachable)"
        )
        self.assertEqual(client.out, b"")

    @defer.inlineCallbacks
    def test_port_that_never_answers_exits_1_at_the_handshake_timeout(self):
        silent = Silent()
        listening = self.reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        began = self.reactor.seconds()
        client = self.run_client("--udp", "--name", "bot", "--port", str(port))
        yield client.wait_for_exit(HANDSHAKE_TIMEOUT + STARTUP)
        self.assertGreaterEqual(self.reactor.seconds() - began, HANDSHAKE_TIMEOUT)
        self.assert_clean_exit_1(
            client,
            f"no answer from 127.0.0.1:{port} (UDP) within 10 seconds"
            " (no TOKEN in answer to HELLO)",
        )
        self.assertEqual(client.out, b"")
        self.assertEqual(set(silent.received), {b"HELLO bot"})

    def spawn_twistd(self, tcp_port, udp_port):
        workdir = tempfile.mkdtemp(prefix="chatroom-client-gone-")
        self.addCleanup(shutil.rmtree, workdir, True)
        argv = [
            TWISTD, "-n", "--pidfile=", "chatroom",
            "--tcp", f"tcp:{tcp_port}:interface=127.0.0.1",
            "--udp", f"udp:{udp_port}:interface=127.0.0.1", "--irc", "off", "--web", "off", "--history", "none",
        ]
        # The installed project, as users run it: no PYTHONPATH of ours.
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        environment["PYTHONUNBUFFERED"] = "1"
        server = support.ProcessWatcher(self.reactor)
        self.reactor.spawnProcess(server, TWISTD, argv, env=environment, path=workdir)
        self.addCleanup(server.kill)
        return server

    @defer.inlineCallbacks
    def start_server_and_join(self):
        """A real twistd with the client joined over UDP; fire with (server, client, port)."""
        for attempt in (1, 2):
            tcp_port = support.free_port(socket.SOCK_STREAM)
            udp_port = support.free_port(socket.SOCK_DGRAM)
            server = self.spawn_twistd(tcp_port, udp_port)
            try:
                yield server.wait_for_output(
                    rb"DatagramChat starting on %d\b" % udp_port, 30.0
                )
                yield server.wait_for_output(rb"chatroom starting", 30.0)
            except support.ClosedWhileWaiting:
                if attempt == 2 or b"already in use" not in server.output:
                    raise
                continue
            break
        client = self.run_client("--udp", "--name", "bot", "--port", str(udp_port))
        yield client.wait_for_output(rb"\* type /help for commands\n", STARTUP + PROMPTLY)
        yield server.wait_for_output(rb"bot arrived via udp", PROMPTLY)
        return server, client, udp_port

    @defer.inlineCallbacks
    def kill(self, server):
        server.transport.signalProcess("KILL")
        yield server.wait_for_exit()
        return self.reactor.seconds()

    @defer.inlineCallbacks
    def test_idle_client_of_a_killed_server_exits_1_within_the_silence_limit(self):
        server, client, port = yield self.start_server_and_join()
        killed = yield self.kill(server)
        yield client.wait_for_exit(SILENCE_LIMIT + PROMPTLY)
        elapsed = self.reactor.seconds() - killed
        # Its first ping after PING_INTERVAL of quiet meets the closed port.
        self.assertLess(elapsed, PING_INTERVAL + PROMPTLY)
        self.assert_clean_exit_1(
            client,
            f"lost the server at 127.0.0.1:{port} (UDP): nothing listens there any more"
            " (port unreachable)",
        )
        self.assertEqual(
            client.out.decode().splitlines(),
            ["* you are bot; 1 in #lobby: bot", "* type /help for commands"],
        )

    @defer.inlineCallbacks
    def test_client_typing_to_a_killed_server_exits_1_at_once(self):
        server, client, port = yield self.start_server_and_join()
        yield self.kill(server)
        client.transport.write(b"anyone there?\n")
        yield client.wait_for_exit(PROMPTLY)
        self.assert_clean_exit_1(
            client,
            f"lost the server at 127.0.0.1:{port} (UDP): nothing listens there any more"
            " (port unreachable)",
        )
