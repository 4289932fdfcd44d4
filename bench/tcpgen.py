"""TCP load generator: every simulated user on one epoll, in one process pinned to CPU 1.

It speaks chatroom's line protocol (``proto="chat"``, also spoken by the seed baseline) or IRC
(``proto="irc"``: NICK/USER, OPER, JOIN, PRIVMSG). Why it cannot flatter a server:

- Every load line is ``m<sender>.<seq> <padding>`` (about 32 bytes of text), with a per-sender
  sequence number. Each step runs in C (``bench/stepper.c``, on the sockets logged in here):
  every receiver's lines are counted on its own socket, in bulk, and compared with what the
  senders in its room sent in that step: a receiver short or over by even one line fails the step. Sampled receivers
  also parse their stream and check every sender's lines arrive exactly once and in order
  (and that no line from another room leaks in). Rooms are quiet of anything else during a
  step (logins and join notices come before it, and the room is drained until quiet between
  steps), so any extra line is a real error.
- Sends are non-blocking; what the socket does not take waits in a per-connection pending
  buffer and still counts as offered, so a server that stops reading a sender (back-pressure)
  shows as late deliveries, never as lines silently not sent.
- A latency probe is a load line whose padding is ``t<monotonic ns>``; sampled receivers take
  the time it took. The generator reports its own CPU and how far it fell behind its
  schedule, so a saturated generator shows.

Shapes: ``loud`` (10 senders, all lines due in a tick in one send), ``all`` (every user sends,
one line per ``send``, senders interleaved) and ``rooms`` (``all`` over many rooms of 10).
Run by ``bench.run`` as ``taskset -c 1 python -m bench.tcpgen '<json spec>'``; the last line
of stdout is a JSON object with the results. Progress goes to stderr.
"""

from __future__ import annotations

import errno
import json
import re
import resource
import select
import socket
import struct
import sys
import time

from bench import stepper
from bench.search import saturate, step_failures
from bench.servers import cpu_seconds, raise_nofile, rss_kb

NL = b"\n"
BCAST = b"~B"
PAD = b"x" * 20
SAMPLE = re.compile(rb"m(\d+)\.(\d+) (?:t(\d+))?")
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR, EPOLLHUP = select.EPOLLERR, select.EPOLLHUP
RECV_SIZE = 1 << 18
LINGER0 = struct.pack("ii", 1, 0)
MAX_P99_MS = 100.0  # a passing step keeps probe p99 under this

CONNECTING, LOGGING_IN, READY = 0, 1, 2
#: The mask of the WebSocket frames users send (clients must mask; any key will do).
WS_MASK = b"\x3a\x5c\x71\x0e"


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (as bench/stepper.c builds them)."""
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                     else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + WS_MASK + bytes(b ^ WS_MASK[i % 4] for i, b in enumerate(payload))


def ws_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete server frames at the start of ``data`` as (opcode, payload), and the rest."""
    out, at = [], 0
    while len(data) - at >= 2:
        n, head = data[at + 1] & 0x7F, 2
        if n == 126:
            if len(data) - at < 4:
                break
            n, head = struct.unpack(">H", data[at + 2:at + 4])[0], 4
        elif n == 127:
            if len(data) - at < 10:
                break
            n, head = struct.unpack(">Q", data[at + 2:at + 10])[0], 10
        if len(data) - at < head + n:
            break
        out.append((data[at] & 0x0F, data[at + head:at + head + n]))
        at += head + n
    return out, data[at:]


def now() -> float:
    """Monotonic seconds (CLOCK_MONOTONIC, shared by every process on the machine)."""
    return time.monotonic()


def cpu_self() -> float:
    """User+system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def log(msg: str) -> None:
    """Progress line on stderr (the harness shows it)."""
    sys.stderr.write("  [gen] %s\n" % msg)
    sys.stderr.flush()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of a list (None if empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None or v == float("inf") else round(v, digits)


class Conn:
    """One simulated user: socket, login state, room, send sequence and receive counters."""

    __slots__ = ("sock", "fd", "idx", "nick", "room", "room_name", "state", "inbuf", "hello",
                 "got_001", "got_366", "got_381", "pending", "closed", "pre", "post", "seq",
                 "rx", "exp", "sampled", "tail", "nxt", "bad", "lat", "marked", "frames")

    def __init__(self, idx: int, nick: str, room: int, room_name: str) -> None:
        self.idx, self.nick, self.room, self.room_name = idx, nick, room, room_name
        self.state = CONNECTING
        self.inbuf = self.hello = self.pending = self.tail = self.frames = b""
        self.got_001 = self.got_366 = self.got_381 = False
        self.closed = self.sampled = self.marked = False
        self.pre = self.post = b""
        self.sock = None
        self.fd = -1
        self.seq = self.rx = self.exp = self.bad = 0
        self.nxt: dict = {}
        self.lat: list = []


class _StepUser:
    """What the stepper needs of a user for one step."""

    __slots__ = ("fd", "idx", "room", "seq", "sender", "sampled", "pre", "post", "frames")

    def __init__(self, c: Conn, sender: bool) -> None:
        self.fd, self.idx, self.room, self.seq = c.fd, c.idx, c.room, c.seq
        self.sender, self.sampled, self.pre, self.post = int(sender), int(c.sampled), c.pre, c.post
        self.frames = c.frames


class Generator:
    """Holds every simulated user on one epoll and runs the scenarios against one server."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.irc = spec["proto"] == "irc"
        self.ws = spec["proto"] == "ws"
        self.addr = ("127.0.0.1", spec["port"])
        self.server_pid = spec.get("server_pid", 0)
        self.ep = select.epoll()
        self.by_fd: dict[int, Conn] = {}
        self.by_idx: dict[int, Conn] = {}
        self.conns: list[Conn] = []
        self.buf = bytearray(RECV_SIZE)
        self.errors: list[str] = []
        self.generation = 0  # bumped when the rooms are rebuilt after the server closed users
        self.rebuilds = 0
        self.last_data = now()
        self.watch_bcast = False
        self.marked = 0
        self.mark_time = 0.0
        oper = spec.get("oper")
        self.oper_cmd = ("OPER %s %s\r\n" % tuple(oper)).encode() if self.irc and oper else b""
        self.oper_mode = spec.get("oper_mode")
        self.default_room = spec.get("default_room", "#lobby")
        self.stepper = spec.get("stepper") or stepper.build()

    # -- connecting and logging in ---------------------------------------------------------

    def room_name(self, room: int, rooms: int) -> str:
        """The room (channel) name users of room number ``room`` join."""
        if rooms == 1:
            return self.spec.get("irc_channel", "#bench") if self.irc else self.default_room
        return "#r%d" % room

    def open(self, idx: int, room: int, rooms: int) -> Conn:
        """Start connecting user ``idx`` (non-blocking); login continues in the event loop."""
        nick = "u%d" % idx if not self.generation else "r%du%d" % (self.generation, idx)
        c = Conn(idx, nick, room, self.room_name(room, rooms))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock, c.fd = s, s.fileno()
        if self.irc:
            c.hello = ("NICK %s\r\nUSER %s 0 * :bench\r\n" % (nick, nick)).encode()
            c.pre, c.post = b"PRIVMSG " + c.room_name.encode() + b" :", b"\r\n"
        elif self.ws:
            c.hello = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       b"Sec-WebSocket-Version: 13\r\n\r\n" % self.addr[1])
            c.pre = b'{"type":"say","room":"%s","text":"' % c.room_name.encode()
            c.post = b'"}'
        else:
            c.hello = nick.encode() + NL
            c.pre, c.post = b"", NL
        err = s.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, "connect failed")
        self.by_fd[c.fd] = c
        self.by_idx[idx] = c
        self.conns.append(c)
        self.ep.register(c.fd, EPOLLIN | EPOLLOUT)
        return c

    def _fail(self, c: Conn, why: str) -> None:
        if not c.closed:
            c.closed = True
            if len(self.errors) < 20:
                self.errors.append("%s: %s" % (c.nick, why))
            try:
                self.ep.unregister(c.fd)
            except (OSError, ValueError):
                pass

    def _login_line(self, c: Conn, line: bytes) -> bool | None:
        """One line for a user logging in: True when logged in, False if refused, else None."""
        if self.irc:
            if line.startswith(b"PING"):
                self._send(c, b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
                return None
            if line.startswith(b"ERROR"):
                return False
            parts = line.split(b" ", 3)
            code = parts[1] if len(parts) > 1 else b""
            if code == b"001" and not c.got_001:
                c.got_001 = True
                out = self.oper_cmd
                if self.oper_cmd and self.oper_mode:
                    out += ("MODE %s %s\r\n" % (c.nick, self.oper_mode)).encode()
                self._send(c, out + ("JOIN %s\r\n" % c.room_name).encode())
            elif code == b"366":
                c.got_366 = True
            elif code == b"381":
                c.got_381 = True
            elif code in (b"433", b"432", b"464", b"491", b"403", b"405", b"471", b"473"):
                return False
            return True if c.got_366 and (c.got_381 or not self.oper_cmd) else None
        if line.startswith(b"! "):
            # Before the welcome it refuses the nickname; after it, it is a notice (such as
            # "the history of #room is unavailable now") and the login goes on.
            if not c.got_001:
                return False
            if len(self.errors) < 20:
                self.errors.append("%s: %s" % (c.nick, line.decode(errors="replace")[:120]))
            return None
        if line.startswith(b"* you are "):
            c.got_001 = True
            if c.room_name == self.default_room:
                return True
            self._send(c, b"/join %s\n/part %s\n" % (c.room_name.encode(),
                                                     self.default_room.encode()))
        elif line.startswith(b"* you left " + self.default_room.encode()):
            return True
        return None

    def _ws_login(self, c: Conn, data: bytes) -> bool | None:
        """WebSocket: the HTTP upgrade's answer, then hello, then the room joined."""
        c.inbuf += data
        if not c.got_001:
            end = c.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return None
            status = c.inbuf[:c.inbuf.find(b"\r\n")]
            if b" 101 " not in status:
                self._fail(c, status.decode(errors="replace")[:120])
                return False
            c.inbuf, c.got_001 = c.inbuf[end + 4:], True
            hello = {"type": "hello", "nick": c.nick, "rooms": {c.room_name: None}}
            self._send(c, ws_frame(json.dumps(hello).encode()))
        frames, c.inbuf = ws_frames(c.inbuf)
        for opcode, payload in frames:
            if opcode == 9:
                self._send(c, ws_frame(payload, 10))
            elif opcode == 8:
                self._fail(c, "WebSocket closed while logging in")
                return False
            elif opcode == 1 and not c.got_366:
                kind = json.loads(payload).get("type")
                if kind == "refusal":
                    self._fail(c, payload.decode(errors="replace")[:120])
                    return False
                c.got_366 = kind == "room-joined"
        if c.got_366:
            c.state, c.frames, c.inbuf = READY, c.inbuf, b""
            return True
        return None

    def _ws_count(self, c: Conn, data: bytes) -> int:
        """A logged-in WebSocket user's text frames in ``data`` (pings answered, not counted)."""
        frames, c.frames = ws_frames(c.frames + data)
        count = 0
        for opcode, payload in frames:
            if opcode == 1:
                count += 1
                if c.sampled:
                    self._scan(c, payload + NL)
            elif opcode == 9:
                self._send(c, ws_frame(payload, 10))
        return count

    def _login_data(self, c: Conn, data: bytes) -> bool | None:
        if self.ws:
            return self._ws_login(c, data)
        c.inbuf += data
        while True:
            i = c.inbuf.find(NL)
            if i < 0:
                return None
            line, c.inbuf = c.inbuf[:i].rstrip(b"\r"), c.inbuf[i + 1:]
            done = self._login_line(c, line)
            if done is False:
                self._fail(c, line.decode(errors="replace")[:120])
                return False
            if done:
                c.state = READY
                c.inbuf = b""
                return True

    def login(self, users: list[tuple[int, int]], rooms: int, concurrency: int, timeout: float,
              connect_rate: float = 0.0) -> dict:
        """Log in ``(idx, room)`` users, at most ``concurrency`` at once, draining everyone.

        ``connect_rate`` (new connections per second, 0 = unlimited) and ``concurrency`` keep
        the burst of SYNs within small listen backlogs (ngircd listens with 10), whose overflow
        makes clients back off for 1, 3, 7... seconds.
        """
        todo = list(reversed(users))
        in_flight = done = 0
        t0 = now()
        deadline = t0 + timeout
        buf = self.buf
        next_report = t0 + 5
        while (todo or in_flight) and now() < deadline:
            if now() > next_report:
                next_report += 5
                log("login: %d of %d logged in, %d in flight, %.0fs" % (
                    done, len(users), in_flight, now() - t0))
            allowed = len(users)
            if connect_rate:
                allowed = int((now() - t0) * connect_rate) + 1 - (len(users) - len(todo))
            while in_flight < concurrency and todo and allowed > 0:
                allowed -= 1
                idx, room = todo.pop()
                try:
                    self.open(idx, room, rooms)
                except OSError as e:
                    self.errors.append("connect u%d: %s" % (idx, e))
                    continue
                in_flight += 1
            time.sleep(0.001)  # let data gather into larger reads
            for fd, ev in self.ep.poll(0.05):
                c = self.by_fd.get(fd)
                if c is None or c.closed:
                    continue
                if c.state == CONNECTING:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._fail(c, "connect error %d" % err)
                        in_flight -= 1
                        continue
                    c.state = LOGGING_IN
                    self.ep.modify(c.fd, EPOLLIN)
                    self._send(c, c.hello)
                    continue
                if ev & EPOLLOUT:
                    self._flush(c)
                    if not ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                        continue
                try:
                    n = c.sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError as e:
                    n = 0
                    self.errors.append("%s: %s" % (c.nick, e))
                if not n:
                    if c.state != READY:
                        in_flight -= 1
                    self._fail(c, "closed by server")
                    continue
                if c.state == READY:
                    if self.ws:
                        c.rx += self._ws_count(c, bytes(buf[:n]))
                        continue
                    c.rx += buf.count(NL, 0, n)
                    if self.irc and buf.find(b"PING", 0, n) >= 0:
                        self._pong(c, bytes(buf[:n]))
                    continue
                r = self._login_data(c, bytes(buf[:n]))
                if r is not None:
                    in_flight -= 1
                    done += r
        return {"requested": len(users), "logged_in": done, "seconds": round(now() - t0, 3),
                "errors": self.errors[:10]}

    def _pong(self, c: Conn, data: bytes) -> None:
        for line in data.split(NL):
            if line.startswith(b"PING"):
                c.rx -= 1  # not a delivery
                self._send(c, b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")

    # -- sending and receiving ---------------------------------------------------------------

    def _send(self, c: Conn, data: bytes) -> None:
        """Send or queue: nothing handed to this function is ever dropped while c is open."""
        if c.closed:
            return
        if c.pending:
            c.pending += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._fail(c, str(e))
            return
        if sent < len(data):
            c.pending = data[sent:]
            self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def _flush(self, c: Conn) -> None:
        if c.pending:
            try:
                sent = c.sock.send(c.pending)
            except BlockingIOError:
                return
            except OSError as e:
                self._fail(c, str(e))
                return
            c.pending = c.pending[sent:]
        if not c.pending and c.state != CONNECTING:
            self.ep.modify(c.fd, EPOLLIN)

    def pump(self, timeout: float) -> None:
        """One epoll round: flush pending output, count every receiver's lines in bulk."""
        buf = self.buf
        got = False
        irc = self.irc
        for fd, ev in self.ep.poll(timeout):
            c = self.by_fd.get(fd)
            if c is None or c.closed or c.state != READY:
                continue
            if ev & EPOLLOUT:
                self._flush(c)
                if not ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    continue
            try:
                n = c.sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError as e:
                self._fail(c, str(e))
                continue
            if not n:
                self._fail(c, "closed by server")
                continue
            got = True
            if self.ws:
                c.rx += self._ws_count(c, bytes(buf[:n]))
                continue
            c.rx += buf.count(NL, 0, n)
            if irc and buf.find(b"PING", 0, n) >= 0:
                self._pong(c, bytes(buf[:n]))
            if c.sampled:
                self._scan(c, bytes(buf[:n]))
            if self.watch_bcast and not c.marked and buf.find(BCAST, 0, n) >= 0:
                c.marked = True
                self.marked += 1
                self.mark_time = now()
        if got:
            self.last_data = now()

    def _scan(self, c: Conn, data: bytes) -> None:
        """Sampled receiver: every sender's lines exactly once, in order; probe latency."""
        data = c.tail + data
        end = data.rfind(NL) + 1
        c.tail = data[end:]
        t = time.monotonic_ns()
        nxt = c.nxt
        for s, q, ts in SAMPLE.findall(data, 0, end):
            s = int(s)
            q = int(q)
            want = nxt.get(s)
            if want is None or q != want:
                c.bad += 1  # duplicate, gap, reorder, or a sender not in this room
                if want is not None and q > want:
                    nxt[s] = q + 1
                continue
            nxt[s] = q + 1
            if ts:
                c.lat.append((t - int(ts)) / 1e6)

    def live(self) -> list[Conn]:
        """Users logged in and still connected."""
        return [c for c in self.conns if c.state == READY and not c.closed]

    def quiesce(self, quiet: float, limit: float) -> float:
        """Pump until nothing arrived for ``quiet`` s and nothing waits to be sent (max ``limit``)."""
        t0 = now()
        self.last_data = t0
        while now() - t0 < limit:
            self.pump(0.01)
            if now() - self.last_data >= quiet and not any(c.pending for c in self.conns
                                                           if not c.closed):
                break
        return now() - t0

    def close_all(self) -> None:
        """Close every socket with an RST (SO_LINGER 0, so no TIME_WAIT piles up), and epoll."""
        for c in self.conns:
            try:
                c.sock.close()
            except OSError:
                pass
        self.conns, self.by_fd, self.by_idx = [], {}, {}

    # -- rooms and steps -------------------------------------------------------------------

    def build(self) -> dict:
        """Log in every user into its room and pick the sampled receivers."""
        sp = self.spec
        n, rooms = sp["users"], sp.get("rooms", 1)
        login = self.login([(i, i % rooms) for i in range(n)], rooms,
                           concurrency=sp.get("concurrency", 200),
                           timeout=sp.get("login_timeout", 60),
                           connect_rate=sp.get("connect_rate", 500))
        if login["logged_in"] < n:
            return login
        self.quiesce(0.3, 10)
        if rooms == 1:
            picks = {0, n // 2, n - 1}
        else:
            picks = {k for k in range(0, rooms, max(1, rooms // 10))}
        for i in picks:
            self.conns[i].sampled = True
        self.members: dict[int, list[Conn]] = {}
        for c in self.conns:
            self.members.setdefault(c.room, []).append(c)
        return login

    def rebuild(self) -> bool:
        """Close everyone (the server closed some users) and log in a fresh set of nicknames."""
        self.close_all()
        self.generation += 1
        self.rebuilds += 1
        time.sleep(0.3)
        login = self.build()
        return login["logged_in"] == self.spec["users"]

    def senders(self, shape: str) -> list[Conn]:
        """Who talks in ``shape``: the first 10 users (loud) or everyone."""
        if shape == "loud":
            return self.conns[:max(1, min(self.spec.get("loud_senders", 10), len(self.conns) - 1))]
        return list(self.conns)

    def step(self, shape: str, rate: float, duration: float, grace: float, drain: float,
             settle: float = 10.0) -> dict:
        """Offer ``rate`` messages/s for ``duration`` s; check every receiver's exact count.

        Passes when every receiver got exactly its room's lines within ``grace`` s after the
        offer stopped (none over, also after the room went quiet), sampled receivers saw every
        sender's lines once and in order, no connection was closed and probe p99 < 100 ms.
        """
        sp = self.spec
        senders = self.senders(shape)
        conns = self.live()
        talking = {c.idx for c in senders}
        start_seq = {c.idx: c.seq for c in senders}
        total = max(1, int(round(rate * duration)))
        probe_every = max(2, int(rate / sp.get("probe_rate", 200)))
        closed0 = sum(c.closed for c in self.conns)
        cpu0, scpu0 = cpu_self(), cpu_seconds(self.server_pid)
        # The step itself runs in C (bench/stepper.c) on these very sockets.
        r = stepper.run(
            self.stepper, conns=[_StepUser(c, c.idx in talking) for c in conns], rate=rate,
            duration=duration, grace=grace, drain=drain, tick=sp.get("tick_s", 0.001),
            loud=shape == "loud", probe_every=probe_every, irc=self.irc, ws=self.ws,
            timeout=duration + drain + 30)
        for c in conns:
            u = r["users"][c.idx]
            c.rx, c.seq, c.frames = u["rx"], u["seq"], u["frames"]
            if u["pending"]:
                c.pending = u["pending"] + c.pending
                self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)
            if u["closed"]:
                self._fail(c, "closed during the step")
            if c.sampled:
                v = r["sampled"][c.idx]
                c.bad, c.lat, c.tail, c.nxt = v["bad"], v["lat"], v["tail"], v["next"]
        for e in r["errors"]:
            if len(self.errors) < 20:
                self.errors.append(e)
        t0, complete_at = r["t0"], r["complete_at"]
        last_at = r["last_data"]
        self.last_data = last_at
        short_in_grace, max_lag = r["short_in_grace"], r["max_lag"]
        pending_at_stop = sum(len(r["users"][c.idx]["pending"]) for c in senders
                              if c.idx in r["users"])
        max_pending = max((len(r["users"][c.idx]["pending"]) for c in senders
                           if c.idx in r["users"]), default=0)
        room_sent: dict[int, int] = {}
        for c in senders:
            room_sent[c.room] = room_sent.get(c.room, 0) + c.seq - start_seq[c.idx]
        expected = 0
        for c in conns:  # a WebSocket user gets its own lines back, as the page does
            own = c.seq - start_seq[c.idx] if c.idx in start_seq and not self.ws else 0
            c.exp = room_sent.get(c.room, 0) - own
            expected += c.exp
        wall = complete_at - t0
        cpu = cpu_self() - cpu0 + r["cpu_s"]
        scpu = cpu_seconds(self.server_pid) - scpu0
        # Quiet room: late extra lines show up here and count as "over".
        self.quiesce(0.1, settle)
        short_r = over_r = short_by = over_by = delivered = 0
        for c in conns:
            d = c.rx - c.exp
            delivered += min(c.rx, c.exp)
            if d < 0:
                short_r += 1
                short_by -= d
            elif d > 0:
                over_r += 1
                over_by += d
        content_errors = 0
        lat: list[float] = []
        sampled = [c for c in conns if c.sampled]
        for c in sampled:
            missing = sum(1 for s, q in c.nxt.items() if q != self.by_idx[s].seq)
            content_errors += c.bad + missing
            lat += c.lat
        closed = sum(c.closed for c in self.conns) - closed0
        p99 = percentile(lat, 99)
        span = max(1e-6, last_at - t0)
        why = step_failures(
            short_in_grace=short_in_grace, grace=grace, short=short_r, short_by=short_by,
            over=over_r, over_by=over_by, order_errors=content_errors, closed=closed,
            closed_what="connections closed", p99=p99, max_p99=MAX_P99_MS,
            lag_s=max_lag / max(rate, 1e-9), duration=duration)
        fan = expected / max(1, total)
        return {
            "shape": shape, "offered_msgs_per_s": round(rate, 1),
            "offered_deliveries_per_s": round(rate * fan), "duration_s": duration,
            "messages": total, "receivers": len(conns), "expected_deliveries": expected,
            "delivered": delivered, "short_in_grace_receivers": short_in_grace,
            "short_receivers": short_r, "short_by": short_by,
            "over_receivers": over_r, "over_by": over_by,
            "sampled_receivers": len(sampled), "content_errors": content_errors,
            "closed_connections": closed,
            "last_delivery_after_s": round(span, 3),
            "deliveries_per_s": round(delivered / span),
            "achieved_msgs_per_s": round(total / span, 1) if not short_r else None,
            "pending_bytes_after_drain": pending_at_stop, "max_sender_pending_bytes": max_pending,
            "generator_lag_ms": round(1000 * max_lag / max(rate, 1e-9), 1),
            "probe_samples": len(lat), "p50_ms": _r(percentile(lat, 50)), "p99_ms": _r(p99),
            "gen_cpu_pct": round(100.0 * cpu / wall, 1),
            "server_cpu_pct": round(100.0 * scpu / wall, 1),
            "ok": not why, "why": why,
        }

    def shape(self, shape: str, deadline: float) -> dict:
        """Saturation search, then half rate, half the reference's rate, and 2x overload."""
        sp = self.spec
        fan = max(1, (sp["users"] // sp.get("rooms", 1)) - 1)
        dur, grace, drain = sp["step_seconds"], sp["grace_seconds"], sp["drain_seconds"]
        label = "%s N=%d" % (shape, sp["users"])

        def one(rate: float, drain_s: float = drain, settle: float = 10.0) -> dict:
            r = self.step(shape, rate, dur, grace, drain_s, settle)
            log("%s offered %.0f msg/s (%.0f deliv/s) -> %s %s gen %.0f%% srv %.0f%%" % (
                label, rate, r["offered_deliveries_per_s"], "ok" if r["ok"] else "FAIL",
                "; ".join(r["why"]) or "p99 %s ms" % r["p99_ms"], r["gen_cpu_pct"],
                r["server_cpu_pct"]))
            if r["closed_connections"] and not self.rebuild():
                r["abort"] = True
            return r

        capacity = sp.get("capacity")
        if capacity:
            # One long step offered above the server's capacity: with back-pressure it takes
            # lines as fast as it can, so lines delivered over the time to the last one is its
            # capacity; no pass/fail threshold near saturation adds noise to the figure.
            r = self.step(shape, capacity["msgs_per_s"], capacity["seconds"], grace,
                          capacity["drain_seconds"], capacity["drain_seconds"])
            log("%s capacity: offered %.0f msg/s, %d deliveries/s, %d short, %d over, %d closed,"
                " gen %.0f%% srv %.0f%%" % (label, capacity["msgs_per_s"], r["deliveries_per_s"],
                                            r["short_receivers"], r["over_receivers"],
                                            r["closed_connections"], r["gen_cpu_pct"],
                                            r["server_cpu_pct"]))
            complete = not (r["short_receivers"] or r["over_receivers"]
                            or r["closed_connections"] or r["content_errors"])
            return {"shape": shape, "users": sp["users"], "capacity": r,
                    "best": {"deliveries_per_s": r["deliveries_per_s"]} if complete else None}
        # Leave time for the three steps after the search (the overload one drains longer).
        tail = 3 * (dur + 0.3) + sp["overload_drain_seconds"] / 2 if sp.get("extras", True) else 0
        start = (sp.get("starts") or {}).get(shape) or sp["start_deliveries"]
        found = saturate(one, start / fan, growth=sp.get("growth", 2.0),
                         resolution=sp.get("resolution", 1.15), max_steps=sp["max_steps"],
                         floor=10.0 / dur, deadline=deadline - tail)
        best = found["best"]
        res = {"shape": shape, "users": sp["users"], "rooms": sp.get("rooms", 1),
               "senders": len(self.senders(shape)), "fan_out": fan, **found}
        aborted = found["steps"] and found["steps"][-1].get("abort")
        if sp.get("extras", True) and best is not None and not aborted:
            if sp.get("half", True):
                res["half"] = one(best["rate"] / 2)
            ref = (sp.get("reference") or {}).get(shape)
            if ref:
                res["at_reference"] = one(ref / fan)
            ov = one(2 * best["rate"], sp["overload_drain_seconds"],
                     settle=sp["overload_drain_seconds"])
            res["overload"] = ov
        res["max_gen_cpu_pct"] = max((s["gen_cpu_pct"] for s in found["steps"]), default=None)
        return res

    def shapes(self) -> dict:
        """Log in the rooms once, run each shape on them."""
        sp = self.spec
        login = self.build()
        out = {"login": login, "shapes": {}}
        if login["logged_in"] < sp["users"]:
            out["error"] = "only %d of %d users logged in" % (login["logged_in"], sp["users"])
            return out
        t_end = now() + sp.get("time_s", 60)
        names = sp["shapes"]
        for i, name in enumerate(names):
            share = (t_end - now()) / (len(names) - i)
            out["shapes"][name] = self.shape(name, now() + share)
        out["rebuilds"] = self.rebuilds
        out["errors"] = self.errors[:10]
        return out

    # -- many idle connections ---------------------------------------------------------

    def connections(self) -> dict:
        """Log in N idle users into one room, measure server memory, time one broadcast.

        Users that did not log in within the login timeout are left out of the broadcast (and
        the report says how many made it).
        """
        sp = self.spec
        n = sp["users"]
        time.sleep(0.2)
        rss0 = rss_kb(self.server_pid)
        cpu0, scpu0 = cpu_self(), cpu_seconds(self.server_pid)
        t0 = now()
        login = self.login([(i, 0) for i in range(n)], 1, concurrency=sp.get("concurrency", 500),
                           timeout=sp.get("login_timeout", 120),
                           connect_rate=sp.get("connect_rate", 0))
        login_wall = max(1e-6, now() - t0)
        login["server_cpu_pct"] = round(
            100.0 * (cpu_seconds(self.server_pid) - scpu0) / login_wall, 1)
        settle = self.quiesce(1.0, sp.get("settle_timeout", 60))
        ready = self.live()
        join_lines = sum(c.rx for c in self.conns)
        rss1 = rss_kb(self.server_pid)
        res = {"users": n, "login": login, "join_lines_received": join_lines,
               "settle_s": round(settle, 2), "rss_idle_kb": rss0, "rss_loaded_kb": rss1,
               "rss_per_conn_kb": round((rss1 - rss0) / max(1, len(ready)), 2),
               "connected_at_broadcast": len(ready)}
        if len(ready) >= 2:
            for c in self.conns:
                c.marked = True
            for c in ready[1:]:
                c.marked = False
            self.marked = 0
            self.watch_bcast = True
            tb = now()
            self._send(ready[0], ready[0].pre + BCAST + b" hello all" + ready[0].post)
            deadline = tb + sp.get("broadcast_timeout", 60)
            while self.marked < len(ready) - 1 and now() < deadline:
                self.pump(0.05)
            res["broadcast_received"] = self.marked
            res["broadcast_expected"] = len(ready) - 1
            res["broadcast_last_s"] = round(self.mark_time - tb, 4) if self.marked else None
        res["gen_cpu_pct"] = round(100.0 * (cpu_self() - cpu0) / (now() - t0), 1)
        res["errors"] = self.errors[:10]
        return res


def main() -> None:
    """Read the JSON spec from argv, run one scenario, print the JSON result last."""
    spec = json.loads(sys.argv[1])
    raise_nofile()
    gen = Generator(spec)
    try:
        if spec["scenario"] == "shapes":
            res = gen.shapes()
        elif spec["scenario"] == "connections":
            res = gen.connections()
        else:
            raise SystemExit("unknown scenario %r" % spec["scenario"])
    finally:
        gen.close_all()
        gen.ep.close()
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
