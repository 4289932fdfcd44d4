"""Twenty hostile clients against a real C{twistd -n chatroom}: the good users do not notice.

A server subprocess (the installed C{twistd} next to C{sys.executable}) listens
on 127.0.0.1 only, on ports chosen by the kernel (C{tcp:0}, C{udp:0}) and read
back from its "... starting on PORT" log lines, so no other test can take them
between choosing and binding.  While two well-behaved users, one TCP (in this
process) and one UDP (the bundled client as a subprocess), each send 500 lines
paced at 50 lines/s, twenty hostile clients start at once:

  - 4 TCP senders of seeded random bytes mixed with escape sequences, telnet
    IAC, NULs, invalid UTF-8 and newlines (two of them log in first, so their
    garbage reaches the room and must come out scrubbed);
  - 2 TCP senders of a 50 MB line without a newline, streamed by a pull
    producer (one chunk each time the transport drains), one before and one
    after logging in; each gets "! line too long" once, and afterwards the
    connection still works;
  - 4 stdlib sockets with a small SO_RCVBUF that log in and never read, while
  - 2 heavy chatters (well-behaved TCP users) send 4000-byte lines at 50/s;
  - 4 connect/drop loops (connect, maybe send a nick or half a line, close
    or reset; the next connection as soon as the last is gone, at most one per
    5 ms, for as long as the good users chat: some 1,500 to 2,000 each);
  - 4 UDP sockets that never join and spam garbage, HELLOs of every size and
    JOINs with wrong tokens.

Asserted: each good user gets the other's 500 lines exactly once and in order;
nothing the good TCP user receives is invalid UTF-8 or holds a control
character (C0 but tab and the CRLF line end, DEL, C1, so no ESC); each
non-reader is dropped ("* NAME left (too slow to read)") and its socket is
closed by the server; the UDP spammers get nothing but TOKEN replies and never
more than 3x the bytes they sent; the server's resident memory stays under
L{RSS_LIMIT_MB} MB, both as sampled from /proc/PID/status (VmRSS) every 0.2 s
for the whole run and as the kernel's high-water mark (VmHWM), which no short
spike between samples escapes; the server logs no traceback; it answers a
fresh login at the end and exits 0 on SIGTERM.  The figures (memory, delivery
counts, timings) are written to stderr.  As positive controls, scrubbed noise
must have reached the good user, the noise must have been throttled ("* slow
down": its lines held back and its socket no longer read), and every spammer
must have had at least one TOKEN.

Options: C{--flood-rate 100 --flood-burst 200}.  At the default 10 lines/s the
500 good lines would take 50 s and the heavy chatters (50 lines/s) would be
throttled; at 100 lines/s the good users (50/s) fit in about 10 s while the
random-bytes senders (well over 100 lines/s) are still throttled.
C{--max-backlog} stays at its default (1 MiB): that is what the non-readers
must exceed.  C{--max-per-ip} stays at its default (100): every client here
comes from 127.0.0.1 and fewer than 30 are connected at once.

The memory bound: an idle server is about 50 MB (history on, in a file of the
test's own); this run peaks near 66 MB.  The non-readers hold at most 1 MiB of
queued output each (plus 64 KiB in Twisted's buffer; the queued chunks are
shared between users), the UDP user at most 1024 unacknowledged datagrams
(1.2 MB), and a 50 MB line is discarded as it is read, a read (64 KiB) at a
time.  The render caches (one per transport) are cleared at 8192 entries or
4 MiB of text, whichever comes first.  150 MB leaves room for this run's
allocator slack and still catches anything that buffers a 50 MB line or an
unbounded backlog.
"""

import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile

from twisted.internet import defer, endpoints, error, protocol, reactor, task
from twisted.internet.interfaces import IPullProducer
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase
from zope.interface import implementer

SEED = 20261124

FLOOD_RATE = 100
FLOOD_BURST = 200
RSS_LIMIT_MB = 150
RSS_INTERVAL = 0.2

GOOD_MESSAGES = 500
GOOD_INTERVAL = 0.02  # 50 lines/s from each good user

NOISE_SENDERS = 4
NOISE_TICKS = 600  # at most 12 s of noise, one burst every 20 ms
BIG_SENDERS = 2
BIG_LINE = 50 * 1024 * 1024
BIG_CHUNK = 256 * 1024
NON_READERS = 4
NON_READER_RCVBUF = 4096
HEAVY_CHATTERS = 2
HEAVY_LINE = 4000
HEAVY_MAX_LINES = 2000  # at most 40 s at 50 lines/s; stopped as soon as not needed
CHURN_LOOPS = 4
CHURN_INTERVAL = 0.005  # a new connection as soon as the last is gone, at most one per 5 ms
CHURN_TICKS = 2400  # at most 12 s; stopped when the good exchange is done
UDP_SPAMMERS = 4
SPAM_TICKS = 500  # 10 s at one burst every 20 ms
SPAM_PER_TICK = 4

MAX_LINE = 4096  # the server's default --max-line
TOO_LONG = f"! line too long (max {MAX_LINE} bytes)"

# Bounds on every wait; a run normally takes about 12 s in all.
START_TIMEOUT = 30
LOGIN_TIMEOUT = 20
STORM_TIMEOUT = 90  # the good exchange, the non-readers' drop, the hostile actors' ends
END_TIMEOUT = 20
LOST_TIMEOUT = 10

#: tcpi_state of a socket whose peer closed it: reset (CLOSE) or shut down (CLOSE_WAIT).
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8
TOKEN_REPLY = re.compile(rb"TOKEN [0-9a-f]{10}\n")
#: C0 controls but tab, CR and LF; DEL; C1. A lone CR or LF is checked separately.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)|(?<!\r)\n")

#: What the random-bytes senders mix into their noise.
NASTY = (
    b"\x1b[2J\x1b[H", b"\x1b]0;owned\x07", b"\x1b]52;c;ZXZpbA==\x07", b"\x1bP+q544e\x1b\\",
    b"\x1b[31;1;5m", b"\x1bc", b"\x1b", b"\x9b31m", b"\xc2\x9b31m", b"\xc2\x85", b"\xc2\x9d0;x\x07",
    b"\x00\x00\x00", b"\x07\x08\x7f", b"\r", b"\r\n", b"\n", b"\n\n\n",
    b"\xff\xfb\x01", b"\xff\xfd\x18", b"\xff\xfa\x18\x00xterm\xff\xf0", b"\xff\xff", b"\xff",
    b"\xff\xf4\xff\xfd\x06", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
    b"\xe2\x80\xae", b"\xef\xbb\xbf", b"/nick gooduser1\n", b"/nick gooduser2\n",
    b"/msg gooduser1 \x1b[2Jspoofed\x1b[0m\n", b"/me \x1b[5mblinks\n", b"/who\n", b"/bogus\n",
    b"gooduser2: forged\n", b"\t tab\n",
)


def starts(prefix):
    """A line matcher: the line begins with C{prefix}."""
    return lambda line: line.startswith(prefix)


def equals(text):
    """A line matcher: the line is exactly C{text}."""
    return lambda line: line == text


class LineLog:
    """Lines as they arrive, and Deferreds that fire once enough of them match."""

    def __init__(self, keep=True):
        self.lines = [] if keep else None
        self.count = 0
        self._waiters = []

    def add(self, line):
        """Record one line and fire the waiters it completes."""
        self.count += 1
        if self.lines is not None:
            self.lines.append(line)
        for waiter in list(self._waiters):
            if waiter[0](line):
                waiter[2] += 1
                if waiter[2] >= waiter[1]:
                    self._waiters.remove(waiter)
                    waiter[3].callback(line)

    def when(self, matches, needed=1):
        """A Deferred firing once C{needed} lines (so far and to come) match."""
        seen = 0 if self.lines is None else sum(1 for line in self.lines if matches(line))
        waiter = [matches, needed, seen, None]

        def cancel(_):
            if waiter in self._waiters:
                self._waiters.remove(waiter)

        waiter[3] = d = defer.Deferred(cancel)
        if seen >= needed:
            d.callback(None)
        else:
            self._waiters.append(waiter)
        return d

    def matching(self, matches):
        """Every kept line that C{matches}, in order."""
        return [line for line in self.lines if matches(line)]


class OutputLines:
    """Split a subprocess's output into lines for a L{LineLog}."""

    def __init__(self, log):
        self._log = log
        self._partial = b""

    def feed(self, data):
        """Take a chunk of output; whole lines go to the log."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._log.add(line.rstrip(b"\r").decode("utf-8", "replace"))


class ServerProcess(protocol.ProcessProtocol):
    """C{twistd -n chatroom}: its log, its ports once listening, its end."""

    LISTENING = re.compile(r"\] (LineChatFactory|DatagramChat) starting on (\d+)$")

    def __init__(self):
        self.log = LineLog()
        self.ports = {}
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self._out = {1: OutputLines(self.log), 2: OutputLines(self.log)}
        self._listening_seen = self.log.when(lambda line: self._port_line(line), 2)
        self._listening_seen.addCallback(
            lambda _: self.listening.callback(
                (self.ports["LineChatFactory"], self.ports["DatagramChat"])
            )
        )

    def _port_line(self, line):
        found = self.LISTENING.search(line)
        if found:
            self.ports[found.group(1)] = int(found.group(2))
        return found is not None

    def connectionMade(self):
        self.transport.closeStdin()

    def childDataReceived(self, fd, data):
        self._out[fd].feed(data)

    def processEnded(self, reason):
        if not self.listening.called:
            self._listening_seen.cancel()
            self._listening_seen.addErrback(lambda _: None)
            tail = "\n".join(self.log.lines[-30:])
            self.listening.errback(RuntimeError(f"twistd ended before listening:\n{tail}"))
        self.ended.callback(reason.value)

    def problems(self):
        """Log lines telling of a traceback or an unhandled error."""
        return [
            line for line in self.log.lines
            if "Traceback" in line or "Unhandled" in line or "CRITICAL" in line
        ]


class ClientProcess(protocol.ProcessProtocol):
    """The bundled client: its stdout lines, its stderr, its exit."""

    def __init__(self):
        self.out = LineLog()
        self.errors = b""
        self.ended = defer.Deferred()
        self._stdout = OutputLines(self.out)

    def outReceived(self, data):
        self._stdout.feed(data)

    def errReceived(self, data):
        self.errors = (self.errors + data)[-65536:]

    def processEnded(self, reason):
        self.ended.callback(reason.value)


class ChatUser(LineReceiver):
    """A TCP user that reads everything; optionally keeps the raw bytes."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, keep=True, raw=False):
        self.log = LineLog(keep)
        self.raw = bytearray() if raw else None
        self.lost = defer.Deferred()
        self.greeted = self.log.when(starts("* welcome to chatroom"))

    def dataReceived(self, data):
        if self.raw is not None:
            self.raw += data
        LineReceiver.dataReceived(self, data)

    def lineReceived(self, line):
        self.log.add(line.rstrip(b"\r").decode("utf-8", "replace"))

    def connectionLost(self, reason):
        self.lost.callback(None)


@implementer(IPullProducer)
class BigLineSender(ChatUser):
    """Streams one huge line, a chunk each time the transport has drained."""

    def __init__(self, total, chunk):
        ChatUser.__init__(self)
        self._left = total
        self._chunk = chunk
        self.streamed = defer.Deferred()

    def stream(self):
        """Start streaming; the Deferred fires once every byte is handed to the transport."""
        self.transport.registerProducer(self, False)
        return self.streamed

    def resumeProducing(self):
        if self._left <= 0:
            return
        piece = self._chunk[: self._left]
        self._left -= len(piece)
        self.transport.write(piece)
        if self._left <= 0:
            self.transport.unregisterProducer()
            self.streamed.callback(None)

    def stopProducing(self):
        if not self.streamed.called:
            self.streamed.errback(error.ConnectionLost("lost while streaming the big line"))


class NoiseSender(protocol.Protocol):
    """Sends seeded random bytes and nasty sequences; reads and discards the replies."""

    SLOW_DOWN = b"\r\n* slow down: "

    def __init__(self, rng, nick=None):
        self.rng = rng
        self.nick = nick
        self.sent = 0
        self.received = 0
        self.told_to_slow_down = 0
        self._tail = b""
        self.lost = defer.Deferred()

    def connectionMade(self):
        if self.nick:
            self.transport.write(self.nick.encode("ascii") + b"\n")

    def send_noise(self, _index):
        """4 to 8 lines of garbage: about 300 lines/s at one burst every 20 ms."""
        rng = self.rng
        lines = []
        for _ in range(rng.randint(4, 8)):
            parts = []
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.5:
                    parts.append(rng.choice(NASTY))
                else:
                    parts.append(rng.randbytes(rng.randint(1, 200)))
            parts.append(rng.choice((b"\n", b"\r\n")))
            lines.append(b"".join(parts))
        data = b"".join(lines)
        self.sent += len(data)
        self.transport.write(data)

    def dataReceived(self, data):
        self.received += len(data)
        window = self._tail + data
        self.told_to_slow_down += window.count(self.SLOW_DOWN)
        self._tail = window[-(len(self.SLOW_DOWN) - 1):]

    def connectionLost(self, reason):
        self.lost.callback(None)


class ChurnConnection(protocol.Protocol):
    """Connects, maybe says something, and goes away at once."""

    def __init__(self, action, nick):
        self.action = action
        self.nick = nick
        self.lost = defer.Deferred()

    def connectionMade(self):
        action, transport = self.action, self.transport
        if action in ("nick-close", "nick-abort"):
            transport.write(self.nick + b"\n")
        elif action == "half-line":
            transport.write(b"half a line, no newline \x1b[2J")
        if action in ("close", "nick-close"):
            transport.loseConnection()
        else:
            transport.abortConnection()

    def connectionLost(self, reason):
        self.lost.callback(None)


class ChurnLoop:
    """Connects and drops, one connection at a time, on each tick when the last is gone."""

    ACTIONS = ("abort", "close", "nick-close", "nick-abort", "half-line")

    def __init__(self, endpoint, rng, k):
        self._endpoint = endpoint
        self._rng = rng
        self._k = k
        self.current = None
        self.iterations = 0
        self.failures = []
        self.began = reactor.seconds()
        self.ended = None

    def tick(self, i):
        """Start the next connection, unless the last one is not gone yet."""
        if self.current is not None:
            return  # the previous connection is not gone yet
        proto = ChurnConnection(self._rng.choice(self.ACTIONS), b"churn%dn%d" % (self._k, i))
        d = endpoints.connectProtocol(self._endpoint, proto)
        d.addCallback(lambda _: proto.lost)
        d.addCallbacks(self._gone, self._failed)
        self.current = d

    def _gone(self, _):
        self.iterations += 1
        self._done()

    def _failed(self, failure):
        self.failures.append(failure.getErrorMessage())
        self._done()

    def _done(self):
        self.current = None
        self.ended = reactor.seconds()


class UdpSpammer(protocol.DatagramProtocol):
    """An address that never joins: garbage, HELLOs of every size, wrong tokens."""

    def __init__(self, target, rng, tag):
        self.target = target
        self.rng = rng
        self.tag = tag
        self.sent = self.sent_bytes = 0
        self.received = self.received_bytes = self.tokens = 0
        self.unexpected = []

    def datagramReceived(self, datagram, address):
        self.received += 1
        self.received_bytes += len(datagram)
        if TOKEN_REPLY.fullmatch(datagram):
            self.tokens += 1
        elif len(self.unexpected) < 10:
            self.unexpected.append((datagram[:80], address))

    def burst(self, _index):
        """Send one tick's worth of garbage to the server."""
        for _ in range(SPAM_PER_TICK):
            datagram = self._garbage()
            self.transport.write(datagram, self.target)
            self.sent += 1
            self.sent_bytes += len(datagram)

    def _garbage(self):
        rng = self.rng
        kind = rng.randrange(10)
        if kind == 0:
            return rng.randbytes(rng.randint(1, 1400))
        if kind == 1:
            return rng.randbytes(rng.randint(1201, 9000))  # oversized
        if kind == 2:
            return b"HELLO"  # 5 bytes: a 17-byte TOKEN would be more than 3x
        if kind == 3:
            return b"HELLO" + b" " * rng.randint(1, 30) + rng.randbytes(rng.randint(0, 30))
        if kind == 4:
            return b"JOIN %010x spam%d" % (rng.getrandbits(40), self.tag)  # wrong token
        if kind == 5:
            return b"JOIN " + rng.randbytes(rng.randint(0, 80))
        if kind == 6:
            return b"%d %s" % (rng.randint(1, 2**31), rng.randbytes(rng.randint(0, 100)))
        if kind == 7:
            return rng.choice([b"PING", b"PONG", b"BYE", b"! hi", b"ACK 5 6 7", b"ACK 0", b"1+ x"])
        if kind == 8:
            return b"1 /nick spam%d\n" % self.tag
        return b"\xff\xfb\x01\x1b[2J" + rng.randbytes(rng.randint(0, 50))


class Pacer:
    """Calls C{step(i)} every C{interval} seconds, C{count} times at most, or until stopped."""

    def __init__(self, interval, count, step):
        self.calls = 0
        self._count = count
        self._step = step
        self._interval = interval
        self._loop = task.LoopingCall(self._tick)
        self.done = None

    def start(self):
        """Start calling; the Deferred fires once stopped or done."""
        self.done = self._loop.start(self._interval, now=True)
        return self.done

    def _tick(self):
        if self.calls >= self._count:
            self._loop.stop()
            return
        self._step(self.calls)
        self.calls += 1

    def stop(self):
        """Stop calling (idempotent)."""
        if self._loop.running:
            self._loop.stop()


class RssSampler:
    """VmRSS of one process, read from /proc now and then."""

    def __init__(self, pid):
        self._path = f"/proc/{pid}/status"
        self.samples = []
        self.high_water_kb = 0
        self.loop = task.LoopingCall(self.sample)

    def sample(self):
        """Note VmRSS, and VmHWM: the kernel's own peak, which no spike between samples escapes."""
        try:
            with open(self._path) as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]))
                    elif line.startswith("VmHWM:"):
                        self.high_water_kb = max(self.high_water_kb, int(line.split()[1]))
        except OSError:
            pass  # the process is gone

    @property
    def peak_kb(self):
        """The largest VmRSS sampled, in kB."""
        return max(self.samples, default=0)


def tcp_state(sock):
    """The kernel's TCP state of C{sock} (tcpi_state from TCP_INFO)."""
    return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


def good_tcp_text(i):
    """The good TCP user's C{i}th line (non-ASCII on purpose)."""
    return f"tcp line {i:03d}: h\u00e9llo \u2713 from the well-behaved TCP user"


def good_udp_text(i):
    """The good UDP user's C{i}th line (non-ASCII on purpose)."""
    return f"udp line {i:03d}: \u00fcn\u00efc\u00f8d\u00e9 \u2713 from the well-behaved UDP user"


def heavy_text(k, i):
    """Heavy chatter C{k}'s C{i}th line: HEAVY_LINE bytes, each line different."""
    head = f"heavy{k} {i:05d} "
    return head + "x" * (HEAVY_LINE - len(head))


class HostileClientsTests(TestCase):
    """Hostile clients against a real server, while two good users chat."""

    timeout = 180

    def setUp(self):
        self.waits = []
        self.connections = []
        self.pacers = []
        self.workdir = tempfile.mkdtemp(prefix="chatroom-hostile-")
        self.addCleanup(shutil.rmtree, self.workdir, True)

    # -- helpers ------------------------------------------------------------

    def bounded(self, d, seconds, what):
        """C{d} with a timeout that fails the test naming C{what}."""

        def timed_out(result, timeout):
            raise self.failureException(f"no {what} within {timeout:g} s")

        d.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)
        self.waits.append(d)
        return d

    def pace(self, interval, count, step):
        """Start a L{Pacer} that cleanup will stop."""
        pacer = Pacer(interval, count, step)
        self.pacers.append(pacer)
        pacer.start()
        return pacer

    @defer.inlineCallbacks
    def connect(self, proto):
        """Connect C{proto} to the server; cleanup drops it if it is still connected."""
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.tcp_port, timeout=10)
        yield endpoints.connectProtocol(endpoint, proto)
        self.connections.append(proto)
        return proto

    @defer.inlineCallbacks
    def login(self, user, nick):
        """Wait for the greeting, send C{nick}, wait for the welcome."""
        yield self.bounded(user.greeted, LOGIN_TIMEOUT, f"greeting for {nick}")
        welcome = user.log.when(starts(f"* you are {nick};"))
        user.sendLine(nick.encode("ascii"))
        yield self.bounded(welcome, LOGIN_TIMEOUT, f"welcome for {nick}")

    @defer.inlineCallbacks
    def _cleanup(self):
        """Stop every loop, drop every connection and wait for them to go."""
        for pacer in self.pacers:
            pacer.stop()
        for d in self.waits:
            if not d.called:
                d.cancel()
            d.addErrback(lambda _: None)
        lost = []
        for proto in self.connections:
            if not proto.lost.called:
                proto.transport.abortConnection()
                lost.append(proto.lost)
        if lost:
            yield defer.DeferredList(lost).addTimeout(LOST_TIMEOUT, reactor)

    @defer.inlineCallbacks
    def start_server(self):
        """Start twistd on kernel-chosen ports; fire with it once both ports listen."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.assertTrue(os.access(twistd, os.X_OK), f"no twistd next to {sys.executable}")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the installed chatroom, as users run it
        server = ServerProcess()
        args = [
            twistd, "-n", "--pidfile=", "chatroom",
            "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
            "--flood-rate", str(FLOOD_RATE), "--flood-burst", str(FLOOD_BURST),
            # History on, as users run it: every good line is written to SQLite too.
            "--history", os.path.join(self.workdir, "history.sqlite3"),
        ]
        process = reactor.spawnProcess(server, twistd, args, env=env, path=self.workdir)
        server.pid = process.pid
        server.process = process

        @defer.inlineCallbacks
        def kill():
            if not server.ended.called:
                process.signalProcess("KILL")
                yield server.ended.addTimeout(LOST_TIMEOUT, reactor)

        self.addCleanup(kill)
        self.tcp_port, self.udp_port = yield self.bounded(
            server.listening, START_TIMEOUT, "listening log lines from twistd"
        )
        return server

    def start_client(self):
        """Start the bundled client over UDP as gooduser2, with this process's sys.path."""
        client = ClientProcess()
        path = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        args = [
            sys.executable, "-m", "chatservice.client",
            "--udp", "--name", "gooduser2", "--port", str(self.udp_port),
        ]
        client.process = reactor.spawnProcess(
            client, sys.executable, args, env=env, path=self.workdir
        )

        @defer.inlineCallbacks
        def kill():
            if not client.ended.called:
                client.process.signalProcess("KILL")
                yield client.ended.addTimeout(LOST_TIMEOUT, reactor)

        self.addCleanup(kill)
        return client

    def open_non_reader(self, nick):
        """A socket with a tiny receive buffer that logs in and never reads."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NON_READER_RCVBUF)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.tcp_port))  # loopback: the kernel completes it at once
        sock.sendall(nick.encode("ascii") + b"\n")
        return sock

    # -- hostile actors -----------------------------------------------------

    @defer.inlineCallbacks
    def heavy_chatter(self, k):
        """Log in as heavyK and send big lines at 50/s; fire with (user, pacer)."""
        user = yield self.connect(ChatUser(keep=False))
        yield self.login(user, f"heavy{k}")
        pacer = self.pace(
            GOOD_INTERVAL, HEAVY_MAX_LINES,
            lambda i: user.sendLine(heavy_text(k, i).encode("ascii")),
        )
        return user, pacer

    @defer.inlineCallbacks
    def big_line(self, k, log_in_first):
        """Send a 50 MB line, then check the refusal and that the connection still works."""
        rng = random.Random(SEED + 100 + k)
        # One line, as telnet reads it: no line end (LF, CR LF, CR NUL) and no IAC command.
        chunk = rng.randbytes(BIG_CHUNK).replace(b"\n", b"N").replace(b"\r", b"R").replace(b"\xff", b"F")
        sender = yield self.connect(BigLineSender(BIG_LINE, chunk))
        nick = f"bigline{k}"
        if log_in_first:
            yield self.login(sender, nick)
            after = b"\n/who\n"
            answer = sender.log.when(lambda line: re.match(r"\* \d+ in #lobby: ", line) is not None)
        else:
            yield self.bounded(sender.greeted, LOGIN_TIMEOUT, f"greeting for {nick}")
            after = b"\n" + nick.encode("ascii") + b"\n"
            answer = sender.log.when(starts(f"* you are {nick};"))
        refused = sender.log.when(equals(TOO_LONG))
        began = reactor.seconds()
        yield self.bounded(sender.stream(), STORM_TIMEOUT, f"end of {nick}'s 50 MB line")
        sender.transport.write(after)
        yield self.bounded(refused, STORM_TIMEOUT, f"{TOO_LONG!r} for {nick}")
        yield self.bounded(answer, STORM_TIMEOUT, f"an answer to {nick} after its 50 MB line")
        return sender, reactor.seconds() - began

    # -- the test -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_good_users_unharmed_by_hostile_clients(self):
        """Every good line arrives once and in order; the server stays bounded and alive."""
        began = reactor.seconds()
        server = yield self.start_server()
        rss = RssSampler(server.pid)
        rss.loop.start(RSS_INTERVAL, now=True)
        self.addCleanup(lambda: rss.loop.running and rss.loop.stop())
        reported = []
        self.addCleanup(
            lambda: reported or sys.stderr.write(
                f"\nserver memory before the failure: sampled peak {rss.peak_kb / 1024:.1f} MB, "
                f"VmHWM {rss.high_water_kb / 1024:.1f} MB\n"
            )
        )
        self.addCleanup(self._cleanup)
        idle_kb = rss.peak_kb

        # The good users log in first.
        good = yield self.connect(ChatUser(raw=True))
        yield self.login(good, "gooduser1")
        client = self.start_client()
        yield self.bounded(
            client.out.when(starts("* you are gooduser2;")), LOGIN_TIMEOUT,
            "welcome for the UDP client",
        )
        yield self.bounded(good.log.when(equals("* gooduser2 joined")), LOGIN_TIMEOUT,
                           "gooduser2's arrival")

        tcp_lines = [good_tcp_text(i) for i in range(GOOD_MESSAGES)]
        udp_lines = [good_udp_text(i) for i in range(GOOD_MESSAGES)]
        udp_seen_all = self.bounded(
            client.out.when(starts("gooduser1: "), GOOD_MESSAGES), STORM_TIMEOUT,
            f"{GOOD_MESSAGES} lines from gooduser1 at the UDP user",
        )
        tcp_seen_all = self.bounded(
            good.log.when(starts("gooduser2: "), GOOD_MESSAGES), STORM_TIMEOUT,
            f"{GOOD_MESSAGES} lines from gooduser2 at the TCP user",
        )
        slow_nicks = [f"slow{i}" for i in range(NON_READERS)]
        slow_dropped = [
            self.bounded(
                good.log.when(equals(f"* {nick} left (too slow to read)")), STORM_TIMEOUT,
                f"'* {nick} left (too slow to read)'",
            )
            for nick in slow_nicks
        ]
        dropped_at = {}
        for nick, d in zip(slow_nicks, slow_dropped):
            d.addCallback(lambda _, nick=nick: dropped_at.setdefault(nick, reactor.seconds()))

        # Twenty hostile clients, all at once, while the good users chat.
        storm = reactor.seconds()
        exchange_done = []
        non_readers = [self.open_non_reader(nick) for nick in slow_nicks]
        heavy = [self.heavy_chatter(k) for k in range(HEAVY_CHATTERS)]
        noise, noise_connected = [], []
        for k in range(NOISE_SENDERS):
            sender = NoiseSender(random.Random(SEED + k), f"noise{k}" if k < 2 else None)
            noise.append(sender)
            connected = self.connect(sender).addCallback(
                lambda s: setattr(s, "pacer", self.pace(GOOD_INTERVAL, NOISE_TICKS, s.send_noise))
            )
            noise_connected.append(
                self.bounded(connected, LOGIN_TIMEOUT, "a noise sender's connection")
            )
        big = [self.big_line(k, log_in_first=(k == 0)) for k in range(BIG_SENDERS)]
        churn = []
        for k in range(CHURN_LOOPS):
            endpoint = endpoints.TCP4ClientEndpoint(
                reactor, "127.0.0.1", self.tcp_port, timeout=10
            )
            loop = ChurnLoop(endpoint, random.Random(SEED + 200 + k), k)
            loop.pacer = self.pace(CHURN_INTERVAL, CHURN_TICKS, loop.tick)
            churn.append(loop)
        spammers = []
        for k in range(UDP_SPAMMERS):
            spammer = UdpSpammer(("127.0.0.1", self.udp_port), random.Random(SEED + 300 + k), k)
            port = reactor.listenUDP(0, spammer, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            spammers.append(spammer)
            spammer.pacer = self.pace(GOOD_INTERVAL, SPAM_TICKS, spammer.burst)
        tcp_pacer = self.pace(
            GOOD_INTERVAL, GOOD_MESSAGES, lambda i: good.sendLine(tcp_lines[i].encode("utf-8"))
        )
        udp_pacer = self.pace(
            GOOD_INTERVAL, GOOD_MESSAGES,
            lambda i: client.process.write(udp_lines[i].encode("utf-8") + b"\n"),
        )

        # The good exchange completes; the non-readers are dropped.
        yield self.bounded(tcp_pacer.done, STORM_TIMEOUT, "the TCP user's 500 lines sent")
        yield self.bounded(udp_pacer.done, STORM_TIMEOUT, "the UDP user's 500 lines written")
        yield tcp_seen_all
        yield udp_seen_all
        exchange_done.append(reactor.seconds())
        for loop in churn:
            loop.pacer.stop()
        for d in slow_dropped:
            yield d
        for k, sock in enumerate(non_readers):
            yield self.bounded(
                self.until(lambda sock=sock: tcp_state(sock) in (TCP_CLOSE, TCP_CLOSE_WAIT)),
                LOST_TIMEOUT, f"the server closing slow{k}'s socket",
            )

        # The storm ends: stop what is open-ended, wait for what is bounded.
        heavy_users = []
        for d in heavy:
            user, pacer = yield self.bounded(d, STORM_TIMEOUT, "a heavy chatter")
            heavy_lines = pacer.calls
            pacer.stop()
            heavy_users.append((user, heavy_lines))
        for d in noise_connected:
            yield d
        for sender in noise:
            sender.pacer.stop()
        big_results = []
        for d in big:
            big_results.append((yield self.bounded(d, STORM_TIMEOUT, "a big-line sender")))
        for loop in churn:
            yield self.bounded(
                self.until(lambda loop=loop: loop.current is None), LOST_TIMEOUT,
                "the last churn connection's end",
            )
        for spammer in spammers:
            yield self.bounded(spammer.pacer.done, STORM_TIMEOUT, "a UDP spammer's end")
        storm_seconds = reactor.seconds() - storm

        # The UDP user leaves; then nothing more can come from it.
        client.process.closeStdin()
        ended = yield self.bounded(client.ended, END_TIMEOUT, "the UDP client's exit")
        yield self.bounded(good.log.when(equals("* gooduser2 left (quit)")), END_TIMEOUT,
                           "'* gooduser2 left (quit)'")
        kicked_noise = [s.nick or f"noise{k}" for k, s in enumerate(noise) if s.lost.called]
        for proto in self.connections:
            if proto is not good and not proto.lost.called:
                proto.transport.abortConnection()

        # A fresh login is answered; then the server stops cleanly.
        fresh = yield self.connect(ChatUser())
        yield self.login(fresh, "freshuser")
        goodbyes = [
            self.bounded(user.log.when(equals("* server shutting down")), END_TIMEOUT,
                         "'* server shutting down'")
            for user in (good, fresh)
        ]
        rss.sample()
        server.process.signalProcess("TERM")
        stopped = yield self.bounded(server.ended, END_TIMEOUT, "the server's exit on SIGTERM")
        for d in goodbyes:
            yield d
        rss.loop.stop()

        # Report, then assert.
        peak_mb = rss.peak_kb / 1024
        # The UDP user's lines, up to its departure: afterwards a noise sender's held-back
        # "/nick gooduser2" may take the freed nick, and its lines are not the UDP user's.
        departed = good.log.lines.index("* gooduser2 left (quit)")
        received_by_tcp = [
            line for line in good.log.lines[:departed] if line.startswith("gooduser2: ")
        ]
        received_by_udp = client.out.matching(starts("gooduser1: "))
        from_noise = [
            line for line in good.log.lines
            if re.match(r"(\[private\] )?noise[01]:", line) or re.match(r"\* noise[01] ", line)
        ]
        drops = ", ".join(f"{nick} {dropped_at[nick] - storm:.1f} s" for nick in slow_nicks)
        big_times = ", ".join(f"{seconds:.1f} s" for _, seconds in big_results)
        churn_times = ", ".join(f"{loop.ended - loop.began:.1f} s" for loop in churn)
        report = [
            f"run {reactor.seconds() - began:.1f} s (storm {storm_seconds:.1f} s, "
            f"good exchange {exchange_done[0] - storm:.1f} s)",
            f"server RSS idle {idle_kb / 1024:.1f} MB, sampled peak {peak_mb:.1f} MB over "
            f"{len(rss.samples)} samples, VmHWM {rss.high_water_kb / 1024:.1f} MB "
            f"(limit {RSS_LIMIT_MB} MB)",
            f"TCP user got {len(received_by_tcp)} of gooduser2's {GOOD_MESSAGES} lines "
            f"({len(good.log.lines)} lines, {len(good.raw)} bytes in all, "
            f"{len(from_noise)} from noise0/noise1)",
            f"UDP user got {len(received_by_udp)} of gooduser1's {GOOD_MESSAGES} lines "
            f"({len(client.out.lines)} lines in all)",
            f"non-readers dropped after {drops}",
            f"heavy chatters sent {[lines for _, lines in heavy_users]} lines of {HEAVY_LINE} B",
            f"50 MB lines streamed and answered in {big_times}",
            f"churn loops: {[loop.iterations for loop in churn]} connections "
            f"in {churn_times}",
            f"noise senders sent {[sender.sent for sender in noise]} bytes, were told to slow "
            f"down {[sender.told_to_slow_down for sender in noise]} times; "
            f"disconnected by the server: {kicked_noise or 'none'}",
            f"UDP spammers: datagrams sent/received {[(s.sent, s.received) for s in spammers]}, "
            f"bytes sent/received {[(s.sent_bytes, s.received_bytes) for s in spammers]}",
        ]
        sys.stderr.write("\nhostile clients:\n  " + "\n  ".join(report) + "\n")
        reported.append(True)

        self.assertEqual(received_by_tcp, [f"gooduser2: {text}" for text in udp_lines])
        self.assertEqual(received_by_udp, [f"gooduser1: {text}" for text in tcp_lines])
        self.assertEqual(ended.exitCode, 0, client.errors.decode("utf-8", "replace"))
        self.assertGreater(len(from_noise), 0, "no scrubbed noise reached the good user")
        self.assertGreater(
            sum(sender.told_to_slow_down for sender in noise), 0, "the noise was never throttled"
        )
        self.assertControlFree(bytes(good.raw))
        self.assertLess(
            rss.peak_kb, RSS_LIMIT_MB * 1024,
            f"server RSS peaked at {peak_mb:.1f} MB (samples in kB: {rss.samples[::10]})",
        )
        self.assertLess(
            rss.high_water_kb, RSS_LIMIT_MB * 1024,
            f"server VmHWM {rss.high_water_kb / 1024:.1f} MB (samples in kB: {rss.samples[::10]})",
        )
        for spammer in spammers:
            self.assertEqual(spammer.unexpected, [], f"spammer {spammer.tag} got non-TOKEN replies")
            self.assertLessEqual(spammer.received_bytes, 3 * spammer.sent_bytes)
            self.assertGreater(spammer.tokens, 0, "the HELLOs got no TOKEN: was anybody there?")
        for loop in churn:
            self.assertEqual(loop.failures, [])
        for sender, _ in big_results:
            self.assertEqual(sender.log.matching(equals(TOO_LONG)), [TOO_LONG])
        self.assertEqual(server.problems(), [])
        self.assertEqual((stopped.exitCode, stopped.signal), (0, None))

    def until(self, predicate, interval=0.05):
        """A Deferred firing once C{predicate()} is true, checked every C{interval} s."""
        cancelled = []

        def check():
            if predicate():
                loop.stop()

        def cancel(_):
            cancelled.append(True)
            if loop.running:
                loop.stop()

        def finished(result):
            if not d.called and not cancelled:
                d.callback(None)
            return result

        loop = task.LoopingCall(check)
        d = defer.Deferred(cancel)
        loop.start(interval, now=True).addBoth(finished)
        return d

    def assertControlFree(self, raw):
        """The bytes are UTF-8 lines ending in CRLF with no other control character."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"not UTF-8 at byte {e.start}: {raw[max(0, e.start - 40):e.start + 40]!r}")
        bad = [
            text[max(0, m.start() - 40): m.start() + 40] for m in FORBIDDEN.finditer(text)
        ]
        self.assertEqual(bad[:5], [], f"{len(bad)} control characters reached the good user")
        self.assertTrue(text.endswith("\r\n"), repr(text[-80:]))
