"""UDP load generator: 50 users talking through a lossy relay, on Twisted's epoll reactor.

For chatroom (``kind="chatroom"``) every simulated user runs the project's own
``chatservice.frontends.reliable.ReliableChannel`` over its socket, so the benchmark exercises the real
protocol code rather than a copy. The wire is docs/udp-protocol.md's: HELLO until TOKEN, JOIN
until ``SESSION <s>``, then every datagram either side sends (data, ACK, PING, PONG, BYE, ``!``)
starts with ``<s> ``; the user drops server datagrams without it, as the bundled client does.
Numbered lines that overtake SESSION are dropped too (the user cannot tell them from forgeries
yet): the server sends them again.
For the seed baseline (``kind="seed"``) users speak the seed's plain protocol: the first
datagram is the nickname, every later one a line, and the server sends each line three times.

All traffic passes ``tests.relay.LossyRelay`` (in this process), which drops the given fraction
of datagrams in each direction and reorders a few. Login happens with the loss set to 0; the
loss applies from the first load message on. Each message carries ``~U <sender> <seq> <ns>``;
receivers count unique deliveries, duplicates shown to the user, and latency.

Run by ``bench.run`` as ``taskset -c 1 python -m bench.udpgen '<json spec>'``; the last stdout
line is the JSON result.
"""

from __future__ import annotations

import hmac
import json
import re
import resource
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from bench.servers import cpu_seconds  # noqa: E402
from bench.tcpgen import percentile  # noqa: E402
from tests.relay import DOWN, LossyRelay  # noqa: E402

MARK = b"~U "
MAX_DATAGRAM = 1200
"""The limit on a datagram either way, the session secret and its space included."""
SESSION_PREFIX_LEN = 17
"""``<s> ``: 16 hex digits and a space, in front of every datagram after SESSION."""
_SESSION = re.compile(rb"[0-9a-f]{16}\Z")


def cpu_self() -> float:
    """User+system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _text(v) -> str:
    return v.decode("ascii", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


class CountingRelay(LossyRelay):
    """The lossy relay, also counting the server's data frames so its retransmissions show.

    Every datagram the server sends reaches the relay before any loss is applied, so
    "data frames offered" minus "distinct (client, seq)" is the number of retransmitted frames.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.count_frames = False
        self.down_data_frames = 0
        self.down_distinct: set = set()

    def _offer(self, direction, client, datagram):
        if self.count_frames and direction == DOWN:
            # "<s> <seq>[+] text": the seq is the second word, after the session secret.
            words = datagram.split(b" ", 2)
            head = words[1].rstrip(b"+") if len(words) > 1 else b""
            if head.isdigit():
                self.down_data_frames += 1
                self.down_distinct.add((client, head))
        super()._offer(direction, client, datagram)


class Stats:
    """What every receiver saw during the load phase."""

    def __init__(self) -> None:
        self.active = False
        self.unique = 0
        self.dup_shown = 0
        self.latency_ms: list[float] = []
        self.other_lines = 0

    def line(self, receiver: "User", line: bytes) -> None:
        """One line shown to ``receiver``: count it as a new message, a duplicate or other."""
        i = line.find(MARK)
        if i < 0:
            self.other_lines += 1
            return
        parts = line[i + 3:].split()
        try:
            key = (int(parts[0]), int(parts[1]))
            sent_ns = int(parts[2])
        except (IndexError, ValueError):
            self.other_lines += 1
            return
        if key in receiver.seen:
            self.dup_shown += 1
            return
        receiver.seen.add(key)
        self.unique += 1
        self.latency_ms.append((time.monotonic_ns() - sent_ns) / 1e6)


class User(DatagramProtocol):
    """One simulated UDP user: login, then lines in and out through the relay."""

    def __init__(self, idx: int, kind: str, relay_addr, stats: Stats) -> None:
        self.idx = idx
        self.nick = "u%d" % idx
        self.kind = kind
        self.relay_addr = relay_addr
        self.stats = stats
        self.joined = False
        self.token = None
        self.session = None
        self.refused = None
        self.channel = None
        self.seen: set = set()
        self.sent = 0
        self.gave_up = False
        self._retry = None
        self._ping = None

    # login ---------------------------------------------------------------------------
    def startProtocol(self) -> None:
        """Start logging in and keep retrying until the welcome arrives."""
        self._retry = task.LoopingCall(self._hello)
        self._retry.start(0.5, now=True)

    def _hello(self) -> None:
        if self.joined or self.session is not None:
            return  # after SESSION the server retransmits the welcome itself
        if self.kind == "seed":
            self._write(self.nick.encode())
        elif self.token is None:
            # The server answers HELLO only if the reply is at most 3x the request, so pad it.
            self._write(b"HELLO " + self.nick.encode())
        else:
            self._write(b"JOIN " + self.token + b" " + self.nick.encode())

    def _write(self, datagram: bytes) -> None:
        if self.transport is not None:
            self.transport.write(datagram, self.relay_addr)

    def _write_in_session(self, datagram: bytes) -> None:
        """One datagram of the chatroom session: the secret, a space, the frame."""
        if self.session is not None:
            self._write(self.session + b" " + datagram)

    def _welcome(self) -> None:
        self.joined = True
        if self._retry is not None and self._retry.running:
            self._retry.stop()
        if self.kind == "chatroom":
            self._ping = task.LoopingCall(self._write_in_session, b"PING")
            self._ping.start(5.0, now=False)

    # receiving -------------------------------------------------------------------------
    def datagramReceived(self, datagram: bytes, addr) -> None:
        """Seed: each datagram is a line. Chatroom: parse a frame and feed the channel."""
        if self.kind == "seed":
            if not self.joined:
                if datagram.startswith(b"* you are"):
                    self._welcome()
                return
            if self.stats.active:
                self.stats.line(self, datagram)
            return
        from chatservice.frontends import reliable
        datagram = datagram.rstrip(b"\r\n")
        if self.session is not None:
            secret, space, datagram = datagram.partition(b" ")
            if not space or not hmac.compare_digest(secret, self.session):
                return  # not this session's: the real client drops it too
        try:
            frame = reliable.parse_frame(datagram)
        except Exception:
            return
        if frame is None:
            return
        if isinstance(frame, reliable.ControlFrame):
            verb = _text(frame.verb).upper()
            args = frame.args if isinstance(frame.args, (list, tuple)) else [frame.args]
            args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            if verb == "TOKEN" and self.token is None and args:
                self.token = args[0]
                self._hello()
            elif (verb == "SESSION" and self.session is None and self.token is not None
                  and args and _SESSION.match(args[0])):
                self.session = args[0]
                self._make_channel()
            elif verb == "!" and self.session is None and args:
                # A refused JOIN: the server kept nothing; say why if login never completes.
                self.refused = _text(args[0])
            return
        if self.channel is not None:
            self.channel.frame_received(frame)

    def _make_channel(self) -> None:
        from chatservice.frontends import reliable
        self.channel = reliable.ReliableChannel(
            reactor, self._write_in_session, self._deliver, self._give_up,
            max_payload=MAX_DATAGRAM - SESSION_PREFIX_LEN)

    def _deliver(self, payload) -> None:
        line = payload if isinstance(payload, bytes) else _text(payload).encode()
        if not self.joined:
            if line.startswith(b"* you are"):
                self._welcome()
            return
        if self.stats.active:
            self.stats.line(self, line)

    def _give_up(self, *args) -> None:
        self.gave_up = True

    # sending --------------------------------------------------------------------------
    def say(self, seq: int) -> None:
        """Send load message number ``seq`` with its send time."""
        text = b"~U %d %d %d" % (self.idx, seq, time.monotonic_ns())
        if self.kind == "seed":
            self._write(text)
        elif self.channel is not None:
            self.channel.send_line(text)
        self.sent += 1

    def stop(self) -> None:
        """Cancel this user's timers and close its channel."""
        for lc in (self._retry, self._ping):
            if lc is not None and lc.running:
                lc.stop()
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:
                pass


def run(spec: dict) -> dict:
    """Run one loss level against one server; return the figures."""
    n = spec["users"]
    kind = spec["kind"]
    server = ("127.0.0.1", spec["port"])
    relay = CountingRelay(reactor, server, loss=0.0, seed=spec.get("seed", 1),
                          reorder=spec.get("reorder", 0.05))
    relay_port = reactor.listenUDP(0, relay, interface="127.0.0.1")
    relay_addr = ("127.0.0.1", relay_port.getHost().port)
    stats = Stats()
    users = [User(i, kind, relay_addr, stats) for i in range(n)]
    ports = [reactor.listenUDP(0, u, interface="127.0.0.1") for u in users]
    result: dict = {"users": n, "loss": spec["loss"], "kind": kind}
    rate = spec["msgs_per_user_per_s"]
    duration = spec["duration_s"]
    per_user = max(1, int(round(rate * duration)))
    t = {"login_start": time.monotonic()}
    cpu = {}

    def wait_login():
        if all(u.joined for u in users):
            t["login_s"] = time.monotonic() - t["login_start"]
            reactor.callLater(0.5, start_load)
        elif time.monotonic() - t["login_start"] > spec.get("login_timeout", 15):
            result["error"] = "only %d of %d users joined" % (sum(u.joined for u in users), n)
            refusals = sorted({u.refused for u in users if u.refused and not u.joined})
            if refusals:
                result["error"] += " (refused: %s)" % "; ".join(refusals)
            finish()
        else:
            reactor.callLater(0.05, wait_login)

    def start_load():
        relay.loss = spec["loss"]
        relay.count_frames = True
        base_f = dict(relay.forwarded)
        base_d = dict(relay.dropped)
        t["base"] = (base_f, base_d)
        t["retx0"] = sum(_counter(u.channel, "retransmitted") for u in users)
        stats.active = True
        cpu["gen"] = cpu_self()
        cpu["srv"] = cpu_seconds(spec.get("server_pid", 0))
        t["load_start"] = time.monotonic()
        tick = task.LoopingCall(send_tick)
        t["tick"] = tick
        tick.start(0.01, now=True)

    def send_tick():
        el = time.monotonic() - t["load_start"]
        due = min(per_user, int(rate * el) + 1)
        for u in users:
            # Stagger users across the period so sends do not come in bursts of 50.
            mine = min(per_user, int(rate * el + u.idx / n))
            while u.sent < mine and u.sent < due:
                u.say(u.sent + 1)
        if all(u.sent >= per_user for u in users):
            t["tick"].stop()
            t["load_end"] = time.monotonic()
            reactor.callLater(0.05, wait_drain)

    expected = per_user * n * (n - 1)

    def wait_drain():
        el = time.monotonic() - t["load_end"]
        if stats.unique >= expected and el > 0.3 or el > spec.get("drain_s", 10):
            finish()
        else:
            reactor.callLater(0.05, wait_drain)

    def finish():
        stats.active = False
        wall = time.monotonic() - t.get("load_start", t["login_start"])
        if "load_start" in t:
            base_f, base_d = t["base"]
            retx_client = sum(_counter(u.channel, "retransmitted") for u in users) - t["retx0"]
            msgs = sum(u.sent for u in users)
            result.update({
                "messages_sent": msgs, "expected_deliveries": msgs * (n - 1),
                "delivered_unique": stats.unique,
                "delivered_fraction": round(stats.unique / max(1, msgs * (n - 1)), 5),
                "duplicates_shown": stats.dup_shown,
                "duplicates_shown_per_delivery": round(stats.dup_shown / max(1, stats.unique), 4),
                "p50_ms": _r(percentile(stats.latency_ms, 50)),
                "p99_ms": _r(percentile(stats.latency_ms, 99)),
                "login_s": round(t.get("login_s", 0), 3),
                "load_s": round(t["load_end"] - t["load_start"], 3) if "load_end" in t else None,
                "relay_forwarded": {k: relay.forwarded[k] - base_f[k] for k in base_f},
                "relay_dropped": {k: relay.dropped[k] - base_d[k] for k in base_d},
                "gen_cpu_pct": round(100 * (cpu_self() - cpu["gen"]) / wall, 1),
                "server_cpu_pct": round(100 * (cpu_seconds(spec.get("server_pid", 0)) - cpu["srv"]) / wall, 1),
                "users_gave_up": sum(u.gave_up for u in users),
            })
            if kind == "chatroom":
                server_retx = relay.down_data_frames - len(relay.down_distinct)
                result.update({
                    "client_retransmissions": retx_client,
                    "server_retransmissions_at_relay": server_retx,
                    "retransmissions_per_delivered": round(
                        (retx_client + server_retx) / max(1, stats.unique), 4),
                    "client_retransmissions_per_delivered": round(retx_client / max(1, stats.unique), 4),
                    "channel_duplicates_dropped": sum(_counter(u.channel, "duplicates") for u in users),
                })
            else:
                result.update({
                    "retransmissions_per_delivered": 2.0,
                    "server_copies_per_line": 3,
                })
        for u in users:
            u.stop()
        d = relay.stop()
        for p in ports + [relay_port]:
            p.stopListening()
        d.addBoth(lambda _: reactor.callLater(0.05, reactor.stop))

    reactor.callLater(0, wait_login)
    hard_stop = reactor.callLater(spec.get("hard_timeout", 90), _hard_stop, result)
    reactor.run()
    if hard_stop.active():
        hard_stop.cancel()
    return result


def _hard_stop(result: dict) -> None:
    result["error"] = "hard timeout"
    reactor.stop()


def _counter(channel, name: str) -> int:
    if channel is None:
        return 0
    v = getattr(channel, name, 0)
    return int(v() if callable(v) else v)


def _r(v):
    return None if v is None else round(v, 2)


def main() -> None:
    """Read the JSON spec from argv, run, print the JSON result as the last line."""
    spec = json.loads(sys.argv[1])
    res = run(spec)
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
