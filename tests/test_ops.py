"""
Operating the server, end to end with the real C{twistd} from the venv: the
log level, the line each listener logs, a port already in use, C{--version},
and daemon mode with a pid file and a log file.

This runs the installed project (reinstall after changing it).  Servers
listen on 127.0.0.1, on ports the kernel picks, read from their log.  Every
wait is bounded: on a line of output, a process's exit, or (for a daemon,
which is not our child) on files and /proc, polled.  Processes are killed in
cleanup whatever happens.
"""

import os
import re
import shutil
import signal
import socket
import sys
import tempfile

import twisted
from twisted.internet import defer, endpoints, ssl, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from chatservice import __version__
from tests import support

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
GREETING = "* welcome to chatroom, what is your nickname?"
#: Starting Python, Twisted and the plugin scan can be slow on a busy machine.
START_WAIT = 30.0
#: How long a server may take to exit (its grace is set to 0.5 s below).
EXIT_WAIT = 10.0
#: Polling interval for what cannot be waited on as an event (a daemon's files).
POLL = 0.05
#: The lines each listener logs once it listens, with the address it really has.
STREAM_LISTENING = (
    rb"\[chatservice\.listen\.StreamListener#info\] (TCP|TLS) line chat listening on (\S+):(\d+)\n"
)
UDP_LISTENING = (
    rb"\[chatservice\.listen\.DatagramListener#info\] UDP chat listening on (\S+):(\d+)\n"
)
LOCAL = ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off"]
#: The info line the hub logs when the raw UDP user below has her nick.
CAROL_ARRIVED = rb"\[chatservice\.core\.hub\.Hub#info\] carol arrived via udp from 127\.0\.0\.1:\d+\n"
#: A goodbye nobody acknowledges need not hold a test up for the default 2 s.
SHORT_GRACE = ["--shutdown-grace", "0.5"]


def installed_environment() -> dict:
    """This environment without our PYTHONPATH: twistd runs the installed chatroom."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@defer.inlineCallbacks
def poll(clock, check, timeout, what):
    """
    Fire with C{check()}'s first true value, calling it every L{POLL} seconds.

    @raise support.WaitTimedOut: C{timeout} seconds went by first.
    """
    deadline = clock.seconds() + timeout
    while True:
        value = check()
        if value:
            return value
        if clock.seconds() >= deadline:
            raise support.WaitTimedOut(f"waited {timeout}s in vain for {what}")
        yield task.deferLater(clock, POLL, lambda: None)


def process_gone(pid: int) -> bool:
    """Whether C{pid} has exited (gone, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class RawUDPUser(DatagramProtocol):
    """
    A UDP user who joins by hand (HELLO, TOKEN, JOIN) and then never
    acknowledges anything, so the server has to retransmit: a debug event.
    """

    def __init__(self, clock, server_port):
        self._server = ("127.0.0.1", server_port)
        self.received = []
        self._waiters = support.Waiters(clock)

    def datagramReceived(self, datagram, address):
        self.received.append(datagram)
        if datagram.startswith(b"TOKEN "):
            token = datagram.split()[1]
            self.transport.write(b"JOIN " + token + b" carol\n", self._server)
        self._waiters.changed()

    def join(self):
        self.transport.write(b"HELLO from a test, asking for a token\n", self._server)

    def _retransmitted(self):
        """The seq of a numbered line received twice (the server resent it), else None."""
        seen = set()
        for datagram in self.received:
            for line in datagram.splitlines():
                # After SESSION every server datagram starts with the 16-hex-digit secret.
                numbered = re.match(rb"(?:[0-9a-f]{16} )?(\d+)\+? ", line)
                if numbered:
                    if numbered.group(1) in seen:
                        return numbered.group(1)
                    seen.add(numbered.group(1))
        return None

    def wait_for_retransmission(self):
        return self._waiters.wait(
            self._retransmitted, support.WAIT, lambda: f"received {self.received!r}"
        )


class _TwistdHarness(TestCase):
    """Runs twistd in a temporary directory and cleans up after it."""

    timeout = 120

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        # Outside the project: twistd may leave files in its working directory.
        self.workdir = tempfile.mkdtemp(prefix="chatroom-ops-")
        self.addCleanup(shutil.rmtree, self.workdir, True)

    def twistd(self, *argv, env=None):
        """Run C{twistd ARGV...} (with C{env} added); return its L{support.ProcessWatcher}."""
        watcher = support.ProcessWatcher(self.reactor)
        environment = installed_environment()
        environment.update(env or {})
        self.reactor.spawnProcess(
            watcher, TWISTD, [TWISTD, *argv], env=environment, path=self.workdir
        )
        self.addCleanup(watcher.kill)
        return watcher

    @defer.inlineCallbacks
    def listening(self, server):
        """Fire with (TCP port, UDP port) once the server logs both listening lines."""
        stream = yield server.wait_for_output(STREAM_LISTENING, START_WAIT)
        udp = yield server.wait_for_output(UDP_LISTENING, START_WAIT)
        return int(stream.group(3)), int(udp.group(2))

    def udp_user(self, port):
        user = RawUDPUser(self.reactor, port)
        listening = self.reactor.listenUDP(0, user, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        user.join()
        return user

    @defer.inlineCallbacks
    def join(self, port, nick):
        user = yield support.connect(self.reactor, port)
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), GREETING)
        user.send(nick.encode() + b"\n")
        yield user.read_until("* type /help for commands")
        return user


class LogLevelTests(_TwistdHarness):
    """Info by default: no wire detail.  C{--log-level debug} shows it."""

    @defer.inlineCallbacks
    def run_with_a_retransmission(self, *options):
        """
        Run the server, make it retransmit to a UDP user who never
        acknowledges, stop it; fire with its whole output.
        """
        server = self.twistd("-n", "--pidfile=", "chatroom", *LOCAL, *SHORT_GRACE, *options)
        _, udp_port = yield self.listening(server)
        user = self.udp_user(udp_port)
        yield user.wait_for_retransmission()
        server.transport.signalProcess("TERM")
        self.assertEqual((yield server.wait_for_exit(EXIT_WAIT)), 0)
        return server.output  # complete: the process has ended

    @defer.inlineCallbacks
    def test_info_by_default(self):
        output = yield self.run_with_a_retransmission()
        self.assertRegex(output, CAROL_ARRIVED)
        self.assertNotIn(b"#debug]", output)
        self.assertNotIn(b"Retransmitting", output)

    @defer.inlineCallbacks
    def test_debug_on_request(self):
        output = yield self.run_with_a_retransmission("--log-level", "debug")
        self.assertRegex(
            output, rb"\[chatservice\.frontends\.reliable\.ReliableChannel#debug\] Retransmitting 1\b"
        )
        self.assertRegex(output, CAROL_ARRIVED)

    @defer.inlineCallbacks
    def test_warn_hides_info(self):
        """
        At warn even the listening lines go, so the server listens on a UNIX
        socket whose path the test knows beforehand.
        """
        path = os.path.join(self.workdir, "chat.sock")
        server = self.twistd(
            "-n", "--pidfile=", "chatroom", "--tcp", f"unix:{path}", "--udp", "off", "--irc", "off", "--web", "off",
            "--max-clients", "1", "--log-level", "warn",
        )
        yield poll(self.reactor, lambda: os.path.exists(path), START_WAIT, "the UNIX socket")
        endpoint = endpoints.UNIXClientEndpoint(self.reactor, path)
        alice = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        self.addCleanup(alice.close)
        self.assertEqual((yield alice.next_line()), GREETING)
        alice.send(b"alice\n")
        yield alice.read_until("* type /help for commands")
        refused = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        self.addCleanup(refused.close)
        self.assertTrue((yield refused.next_line()).startswith("! server full"))
        server.transport.signalProcess("TERM")
        self.assertEqual((yield server.wait_for_exit(EXIT_WAIT)), 0)
        self.assertRegex(server.output, rb"#warn\] Refused a connection from .*: server full")
        self.assertNotIn(b"#info]", server.output)
        self.assertNotIn(b"alice arrived", server.output)


class ListeningLineTests(_TwistdHarness):
    """One line per listener, with the port the kernel really gave it."""

    @defer.inlineCallbacks
    def test_port_0_is_logged_as_the_real_port(self):
        server = self.twistd("-n", "--pidfile=", "chatroom", *LOCAL)
        tcp_port, udp_port = yield self.listening(server)
        self.assertNotIn(0, (tcp_port, udp_port))
        self.assertEqual(len(re.findall(STREAM_LISTENING, server.output)), 1)
        self.assertEqual(len(re.findall(UDP_LISTENING, server.output)), 1)
        # The ports the lines name are the ones that answer.
        yield self.join(tcp_port, "alice")
        user = self.udp_user(udp_port)
        yield user.wait_for_retransmission()
        self.assertTrue(user.received[0].startswith(b"TOKEN "))

    @defer.inlineCallbacks
    def test_tls_endpoint(self):
        import trustme

        authority = trustme.CA()
        pem = os.path.join(self.workdir, "server.pem")
        authority.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(pem)
        server = self.twistd(
            "-n", "--pidfile=", "chatroom", "--udp", "off", "--irc", "off", "--web", "off",
            "--tcp", f"ssl:0:interface=127.0.0.1:privateKey={pem}:certKey={pem}",
        )
        found = yield server.wait_for_output(STREAM_LISTENING, START_WAIT)
        self.assertEqual((found.group(1), found.group(2)), (b"TLS", b"127.0.0.1"))
        trust = ssl.Certificate.loadPEM(authority.cert_pem.bytes())
        endpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("localhost", trustRoot=trust),
            endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", int(found.group(3))),
        )
        user = yield endpoints.connectProtocol(endpoint, support.LineClient(self.reactor))
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), GREETING)


class PortInUseTests(_TwistdHarness):
    """A port already taken: one clear line, exit status 1, no traceback."""

    def hold(self, kind):
        """Bind (and for TCP, listen on) a free 127.0.0.1 port until cleanup."""
        holder = socket.socket(socket.AF_INET, kind)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        return holder.getsockname()[1]

    def assert_one_clear_line(self, output, expected):
        self.assertNotIn(b"Traceback", output)
        self.assertNotIn(b"#error]", output)
        self.assertNotIn(b"stderr", output)
        problems = [line for line in output.splitlines() if b"annot listen" in line]
        self.assertEqual(len(problems), 1, output)
        self.assertTrue(problems[0].endswith(expected), problems[0])

    @defer.inlineCallbacks
    def test_tcp_port_in_use(self):
        port = self.hold(socket.SOCK_STREAM)
        pidfile = os.path.join(self.workdir, "chatroom.pid")
        server = self.twistd(
            "-n", f"--pidfile={pidfile}", "chatroom",
            "--tcp", f"tcp:{port}:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
        )
        self.assertEqual((yield server.wait_for_exit(START_WAIT)), 1)
        self.assertFalse(os.path.exists(pidfile), "the pid file should not outlive the process")
        self.assert_one_clear_line(
            server.output,
            b"[chatservice.listen.StreamListener#critical] "
            b"Cannot listen on TCP port %d on 127.0.0.1: address already in use" % port,
        )

    @defer.inlineCallbacks
    def test_udp_port_in_use(self):
        port = self.hold(socket.SOCK_DGRAM)
        server = self.twistd(
            "-n", "--pidfile=", "chatroom",
            "--tcp", "tcp:0:interface=127.0.0.1", "--udp", f"udp:{port}:interface=127.0.0.1", "--irc", "off", "--web", "off",
        )
        self.assertEqual((yield server.wait_for_exit(START_WAIT)), 1)
        self.assert_one_clear_line(
            server.output,
            b"[chatservice.listen.DatagramListener#critical] "
            b"Cannot listen on UDP port %d on 127.0.0.1: address already in use" % port,
        )

    @defer.inlineCallbacks
    def test_daemon_reports_it_and_exits_1(self):
        """
        In daemon mode twistd's parent waits for the daemon to start and
        prints the exception's last line if it does not; it must not hang.
        """
        port = self.hold(socket.SOCK_STREAM)
        pidfile = os.path.join(self.workdir, "chatroom.pid")
        logfile = os.path.join(self.workdir, "chatroom.log")
        parent = self.twistd(
            f"--pidfile={pidfile}", f"--logfile={logfile}", "chatroom",
            "--tcp", f"tcp:{port}:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off",
        )
        self.assertEqual((yield parent.wait_for_exit(START_WAIT)), 1)
        self.assertIn(
            b"TCP port %d on 127.0.0.1: address already in use" % port, parent.err
        )
        self.assertFalse(os.path.exists(pidfile))
        problems = [line for line in read(logfile).splitlines() if b"#critical]" in line]
        self.assertEqual(len(problems), 1)
        self.assertTrue(
            problems[0].endswith(
                b"Cannot listen on TCP port %d on 127.0.0.1: address already in use" % port
            )
        )


class VersionTests(_TwistdHarness):
    """C{twistd chatroom --version} names chatroom's version."""

    @defer.inlineCallbacks
    def test_version(self):
        run = self.twistd("chatroom", "--version")
        self.assertEqual((yield run.wait_for_exit(START_WAIT)), 0)
        self.assertEqual(
            run.out, f"chatroom {__version__} (Twisted {twisted.__version__})\n".encode()
        )


class DaemonTests(_TwistdHarness):
    """
    twistd without C{-n}: a daemon with a pid file and a log file, stopped
    with SIGTERM through the pid file, as an init script or an operator would.
    """

    @defer.inlineCallbacks
    def test_daemon_chats_and_stops_on_sigterm(self):
        pidfile = os.path.join(self.workdir, "chatroom.pid")
        logfile = os.path.join(self.workdir, "chatroom.log")
        parent = self.twistd(
            f"--pidfile={pidfile}", f"--logfile={logfile}", "chatroom", *LOCAL, *SHORT_GRACE
        )
        # The parent exits 0 once the daemon has listened and started.
        self.assertEqual((yield parent.wait_for_exit(START_WAIT)), 0)
        pid = int((yield poll(self.reactor, lambda: read(pidfile), START_WAIT, "the pid file")))
        self.addCleanup(self.kill_if_running, pid)
        self.assertNotEqual(pid, parent.transport.pid)
        stream = yield poll(
            self.reactor, lambda: re.search(STREAM_LISTENING, read(logfile)), START_WAIT,
            "the TCP listening line in the log file",
        )
        udp = yield poll(
            self.reactor, lambda: re.search(UDP_LISTENING, read(logfile)), START_WAIT,
            "the UDP listening line in the log file",
        )
        tcp_port, udp_port = int(stream.group(3)), int(udp.group(2))

        alice = yield self.join(tcp_port, "alice")
        bob = yield self.join(tcp_port, "bob")
        self.assertEqual((yield alice.next_line()), "* bob joined")
        bob.send(b"hello from a daemon\r\n")
        self.assertEqual((yield alice.next_line()), "bob: hello from a daemon")
        carol = self.udp_user(udp_port)  # debug-worthy: she never acknowledges
        yield carol.wait_for_retransmission()

        os.kill(pid, signal.SIGTERM)
        for user in (alice, bob):
            yield user.read_until("* server shutting down")
            yield user.wait_closed()
        yield poll(
            self.reactor, lambda: not os.path.exists(pidfile), EXIT_WAIT, "the pid file to go"
        )
        yield poll(self.reactor, lambda: process_gone(pid), EXIT_WAIT, "the daemon to exit")
        log = read(logfile)
        self.assertIn(b"Server Shut Down.", log)
        # The default history file is in the working directory (twistd's --rundir).
        self.assertTrue(os.path.exists(os.path.join(self.workdir, "chatroom.sqlite3")))
        self.assertRegex(log, CAROL_ARRIVED)
        self.assertNotIn(b"#debug]", log)
        self.assertNotIn(b"Traceback", log)

    def kill_if_running(self, pid):
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
            return poll(self.reactor, lambda: process_gone(pid), EXIT_WAIT, "the daemon to die")
        return None
