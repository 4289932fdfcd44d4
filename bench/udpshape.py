"""Everyone talks over UDP: chatroom's reliable channel under the same search as over TCP.

N users log in over UDP straight to the server (no relay, no loss) with the project's own
``ReliableChannel`` (via ``bench.udpgen.User``), then every user sends ``m<idx>.<seq> t<ns>``
lines, interleaved, at an aggregate rate that ``bench.search.saturate`` raises until a step
fails. Every receiver parses its lines (UDP lines reach Python one by one anyway) and checks
its exact count and that every sender's lines arrive once and in order. The reactor is driven
step by step with ``reactor.iterate`` so the search reads like the TCP one.

Run by ``bench.run`` as ``taskset -c 1 python -m bench.udpshape '<json spec>'``.
"""

from __future__ import annotations

import json
import re
import sys
import time

from bench.udpgen import User, cpu_self, reactor  # installs the epoll reactor first
from bench.search import saturate, step_failures
from bench.servers import cpu_seconds
from bench.tcpgen import MAX_P99_MS, _r, log, percentile

LINE = re.compile(rb"m(\d+)\.(\d+) t(\d+)")


class Counter:
    """What each receiver saw in the current step (installed as the users' ``stats``)."""

    def __init__(self) -> None:
        self.active = False

    def line(self, u: User, line: bytes) -> None:
        """One line shown to ``u``: count it; check order per sender; take its latency."""
        m = LINE.search(line)
        u.rx += 1
        if m is None:
            u.bad += 1
            return
        s, q = int(m.group(1)), int(m.group(2))
        if u.nxt.get(s) != q:
            u.bad += 1
            return
        u.nxt[s] = q + 1
        u.lat.append((time.monotonic_ns() - int(m.group(3))) / 1e6)


def spin(seconds: float, until=None) -> None:
    """Run the reactor for at most ``seconds``, or until ``until()`` is true."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until is not None and until():
            return
        reactor.iterate(0.001)


class UdpShape:
    """The logged-in UDP users and the steps run on them."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.server_pid = spec.get("server_pid", 0)
        self.counter = Counter()
        server = ("127.0.0.1", spec["port"])
        self.users = [User(i, "chatroom", server, self.counter) for i in range(spec["users"])]
        for u in self.users:
            u.rx = u.exp = u.bad = u.seq = 0
            u.nxt, u.lat = {}, []
        self.ports = [reactor.listenUDP(0, u, interface="127.0.0.1") for u in self.users]

    def login(self) -> dict:
        t0 = time.monotonic()
        spin(self.spec.get("login_timeout", 20), lambda: all(u.joined for u in self.users))
        for u in self.users:
            if u.channel is not None:  # the generator's side must not be the one giving up
                u.channel._max_unacked = 1 << 20
        # Every join is announced to the room: wait until those notices stopped arriving
        # and nothing is outstanding, so no step counts them (at most 60 s).
        quiet_since, delivered, end = time.monotonic(), -1, time.monotonic() + 60
        while time.monotonic() < end:
            spin(0.05)
            now_delivered = sum(u.channel.delivered for u in self.users if u.channel)
            if now_delivered != delivered:
                quiet_since, delivered = time.monotonic(), now_delivered
            elif time.monotonic() - quiet_since >= 0.5 and not any(
                    u.channel.outstanding for u in self.users if u.channel):
                break
        return {"requested": len(self.users), "logged_in": sum(u.joined for u in self.users),
                "seconds": round(time.monotonic() - t0, 3)}

    def step(self, rate: float, duration: float, grace: float, drain: float) -> dict:
        """Offer ``rate`` lines/s from everyone, interleaved; check every receiver."""
        users = self.users
        n = len(users)
        for u in users:
            u.rx, u.bad, u.lat = 0, 0, []
            u.nxt = {o.idx: o.seq for o in users if o is not u}
        start = [u.seq for u in users]
        gave0 = sum(u.gave_up for u in users)
        self.counter.active = True
        total = max(1, int(round(rate * duration)))
        cpu0, scpu0 = cpu_self(), cpu_seconds(self.server_pid)
        t0 = time.monotonic()
        k = max_lag = 0
        while k < total:
            due = min(total, int(rate * (time.monotonic() - t0)) + 1)
            max_lag = max(max_lag, due - k)
            for j in range(k, due):
                u = users[j % n]
                if u.channel is not None:
                    u.channel.send_line(b"m%d.%d t%d" % (u.idx, u.seq, time.monotonic_ns()))
                u.seq += 1
            k = due
            reactor.iterate(0.001)
        t_stop = time.monotonic()
        sent = sum(u.seq for u in users) - sum(start)
        for u, s0 in zip(users, start):
            u.exp = sent - (u.seq - s0)
        short_in_grace = None
        last = t_stop
        while time.monotonic() < t_stop + drain:
            waiting = sum(1 for u in users if u.rx < u.exp)
            if time.monotonic() >= t_stop + grace and short_in_grace is None:
                short_in_grace = waiting
            if not waiting:
                break
            before = sum(u.rx for u in users)
            reactor.iterate(0.002)
            if sum(u.rx for u in users) != before:
                last = time.monotonic()
        if short_in_grace is None:
            short_in_grace = sum(1 for u in users if u.rx < u.exp)
        wall = time.monotonic() - t0
        cpu, scpu = cpu_self() - cpu0, cpu_seconds(self.server_pid) - scpu0
        spin(0.15)  # late extra lines count as "over"
        self.counter.active = False
        short = [u.exp - u.rx for u in users if u.rx < u.exp]
        over = [u.rx - u.exp for u in users if u.rx > u.exp]
        bad = sum(u.bad for u in users) + sum(
            1 for u in users for s, q in u.nxt.items() if q != users[s].seq)
        lat = [x for u in users for x in u.lat]
        p99 = percentile(lat, 99)
        closed = sum(u.gave_up for u in users) - gave0
        why = step_failures(
            short_in_grace=short_in_grace, grace=grace, short=len(short), short_by=sum(short),
            over=len(over), over_by=sum(over), order_errors=bad, closed=closed,
            closed_what="channels gave up", p99=p99, max_p99=MAX_P99_MS,
            lag_s=max_lag / max(rate, 1e-9), duration=duration)
        span = max(1e-6, last - t0)
        delivered = sum(min(u.rx, u.exp) for u in users)
        return {
            "shape": "udp", "offered_msgs_per_s": round(rate, 1),
            "offered_deliveries_per_s": round(rate * (n - 1)), "duration_s": duration,
            "messages": total, "receivers": n, "expected_deliveries": sent * (n - 1),
            "delivered": delivered, "short_in_grace_receivers": short_in_grace,
            "short_receivers": len(short), "short_by": sum(short),
            "over_receivers": len(over), "over_by": sum(over),
            "sampled_receivers": n, "content_errors": bad, "closed_connections": closed,
            "last_delivery_after_s": round(span, 3), "deliveries_per_s": round(delivered / span),
            "achieved_msgs_per_s": round(total / span, 1) if not short else None,
            "generator_lag_ms": round(1000 * max_lag / rate, 1),
            "probe_samples": len(lat), "p50_ms": _r(percentile(lat, 50)), "p99_ms": _r(p99),
            "gen_cpu_pct": round(100.0 * cpu / wall, 1),
            "server_cpu_pct": round(100.0 * scpu / wall, 1),
            "ok": not why, "why": why,
        }

    def run(self) -> dict:
        """Login, saturation search, half rate, 2x overload."""
        sp = self.spec
        login = self.login()
        res: dict = {"shape": "udp", "users": sp["users"], "rooms": 1, "senders": sp["users"],
                     "fan_out": sp["users"] - 1, "login": login}
        if login["logged_in"] < sp["users"]:
            res["error"] = "only %d of %d users logged in" % (login["logged_in"], sp["users"])
            return res
        dur, grace, drain = sp["step_seconds"], sp["grace_seconds"], sp["drain_seconds"]
        fan = sp["users"] - 1

        def one(rate: float, drain_s: float = drain) -> dict:
            r = self.step(rate, dur, grace, drain_s)
            log("udp N=%d offered %.0f msg/s -> %s %s gen %.0f%% srv %.0f%%" % (
                sp["users"], rate, "ok" if r["ok"] else "FAIL",
                "; ".join(r["why"]) or "p99 %s ms" % r["p99_ms"], r["gen_cpu_pct"],
                r["server_cpu_pct"]))
            # The next step starts on channels with nothing outstanding and a quiet room.
            spin(5.0, lambda: all(u.channel is None or not u.channel.outstanding
                                  for u in self.users))
            spin(0.1)
            return r

        deadline = time.monotonic() + sp.get("time_s", 30) - 2 * (dur + 0.5) - sp[
            "overload_drain_seconds"] / 2
        res.update(saturate(one, sp["start_deliveries"] / fan, growth=sp.get("growth", 2.0),
                            resolution=sp.get("resolution", 1.15), max_steps=sp["max_steps"],
                            floor=10.0 / dur, deadline=deadline))
        if res["best"] is not None:
            res["half"] = one(res["best"]["rate"] / 2)
            res["overload"] = one(2 * res["best"]["rate"], sp["overload_drain_seconds"])
        res["max_gen_cpu_pct"] = max((s["gen_cpu_pct"] for s in res["steps"]), default=None)
        return res

    def stop(self) -> None:
        for u in self.users:
            u.stop()
        for p in self.ports:
            p.stopListening()


def main() -> None:
    """Read the JSON spec from argv, run, print the JSON result as the last line."""
    spec = json.loads(sys.argv[1])
    shape = UdpShape(spec)
    try:
        res = shape.run()
    finally:
        shape.stop()
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
