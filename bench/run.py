"""Run the chatroom benchmark: every server, every load shape, one report.

Usage (from the repository root)::

    python -m bench.run [--quick | --smoke] [--only SERVER ...] [--scenario NAME ...] [--out DIR]

Installs ngircd and InspIRCd with apt-get when their binaries are missing (not in --smoke),
starts each server itself (pinned to CPU 0, fresh for every measurement), drives it with a
generator pinned to CPU 1, and writes ``latest.md`` and ``latest.json`` to ``--out``
(default ``bench/results``; --smoke defaults to a temporary folder). A full run keeps to
10 minutes, --quick to 2, --smoke to a few seconds; a part that would not fit is skipped and
the report says so. Every server process is stopped on the way out, even on errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.servers import (ALL_SERVERS, APT_PACKAGES, GENERATOR_CPU, REPO, SERVER_CPU, Server,
                           apt_install, make_server, raise_nofile)

SCENARIOS = ("shapes", "history", "udp", "connections")
REFERENCE = "ngircd"  # ratios and the latency target compare with ngircd, measured first

STEP = {"step_seconds": 0.5, "grace_seconds": 0.2, "drain_seconds": 2.0,
        "overload_drain_seconds": 4.0, "probe_rate": 200, "loud_senders": 10,
        "start_deliveries": 200000, "max_steps": 9, "resolution": 1.15, "growth": 2.0,
        "udp_start_deliveries": 4000}
FULL = {
    "budget_s": 575,
    # Fraction of the budget used up when each part ends; connections get the rest.
    "shares": {"shapes": 0.66, "history": 0.80, "udp": 0.86},
    "shapes": dict(STEP, users=[10, 100, 500], rooms_users=2000, rooms=200,
                   udp_users=[10, 100], web_users=[100], shape_s=10.5),
    "history": {"users": 100, "rounds": 5, "replay_rows": 1000000, "capacity_msgs_per_s": 150000,
                "capacity_s": 2.5, "capacity_drain_s": 5.0},
    "udp": {"users": 50, "losses": [0.0, 0.2], "msgs_per_user_per_s": 2, "duration_s": 3,
            "reorder": 0.05, "drain_s": {"chatroom": 8, "seed": 1}},
    "connections": {"users": 10000, "servers": ["chatroom", "ngircd"],
                    "same_count": ["chatroom", "chatroom-irc"], "login_timeout": 45,
                    "broadcast_timeout": 20, "overhead_s": 12},
}
QUICK = {
    "budget_s": 112,
    "shares": {"shapes": 0.62, "history": 0.80, "udp": 0.88},
    "shapes": dict(STEP, users=[10, 100], rooms_users=300, rooms=30, udp_users=[10],
                   web_users=[100],
                   step_seconds=0.25, drain_seconds=1.0, overload_drain_seconds=2.0,
                   start_deliveries=300000, max_steps=5, resolution=1.3, shape_s=4.5,
                   half_for_all=False),
    "history": {"users": 100, "rounds": 1, "replay_rows": 200000, "capacity_msgs_per_s": 150000,
                "capacity_s": 2.0, "capacity_drain_s": 5.0},
    "udp": {"users": 50, "losses": [0.2], "msgs_per_user_per_s": 2, "duration_s": 2,
            "reorder": 0.05, "drain_s": {"chatroom": 3, "seed": 0.5}},
    "connections": {"users": 1000, "servers": ["chatroom", "ngircd"],
                    "same_count": ["chatroom", "chatroom-irc"], "login_timeout": 10,
                    "broadcast_timeout": 10, "overhead_s": 3},
}
SMOKE = {
    "budget_s": 60,
    "shares": {"shapes": 1.0, "history": 1.0, "udp": 1.0},
    "servers": ["chatroom", "chatroom-irc", "chatroom-web", "seed"],
    "scenarios": ["shapes"],
    "shapes": dict(STEP, users=[6], rooms_users=24, rooms=4, udp_users=[5], web_users=[6],
                   step_seconds=0.2,
                   drain_seconds=1.0, overload_drain_seconds=1.0, probe_rate=50,
                   start_deliveries=300, udp_start_deliveries=300, max_steps=2, shape_s=4.0),
}


def say(msg: str) -> None:
    """Progress on stderr."""
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


class Budget:
    """Wall-clock budget for the whole run; parts ask before they start."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        """Seconds remaining."""
        return self.seconds - (time.monotonic() - self.t0)

    def left_until(self, share: float) -> float:
        """Seconds remaining until ``share`` of the whole budget is used."""
        return self.seconds * share - (time.monotonic() - self.t0)


def ensure_binaries(names: list[str]) -> dict:
    """apt-get install ngircd / inspircd if their binary is missing; return what happened."""
    missing = [APT_PACKAGES[n] for n in names if n in APT_PACKAGES and not shutil.which(n)]
    if not missing:
        return {"installed": []}
    try:
        apt_install(missing, say)
    except (subprocess.SubprocessError, OSError) as e:
        return {"installed": [], "error": "apt-get failed: %s" % e}
    return {"installed": missing}


def run_generator(module: str, spec: dict, timeout: float) -> dict:
    """Run a generator pinned to CPU 1 and return its JSON result (or an error dict)."""
    cmd = ["taskset", "-c", GENERATOR_CPU, sys.executable, "-m", module, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), stdout=subprocess.PIPE, timeout=timeout,
                              preexec_fn=raise_nofile)
    except subprocess.TimeoutExpired:
        return {"error": "generator timed out after %.0fs" % timeout}
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode or not lines:
        return {"error": "generator exited %s" % proc.returncode}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": "generator printed no result"}


def with_server(name: str, tmp: Path, tag: str, fn) -> dict:
    """Start a fresh server, call ``fn(server)``, always stop it; errors become results."""
    server = make_server(name)
    try:
        server.start(tmp / ("%s-%s" % (name, tag)))
    except Exception as e:  # a server that cannot start is reported, not fatal
        server.stop()
        return {"error": "start failed: %s" % e}
    try:
        res = fn(server)
        if server.proc is not None and server.proc.poll() is not None:
            res.setdefault("error", "server exited with %s during the run" % server.proc.returncode)
        return res
    finally:
        server.stop()


def tcp_shapes(server: Server, users: int, rooms: int, shapes: list[str], cfg: dict,
               time_s: float, starts: dict, reference: dict, extras: bool = True) -> dict:
    """One generator run: log ``users`` into ``rooms`` rooms, run each shape's search."""
    sc = {k: v for k, v in cfg.items() if k in STEP or k == "capacity"}
    # The step at half a server's own best is what the others' latency is compared with:
    # --quick runs it on the reference only.
    half = cfg.get("half_for_all", True) or server.name == REFERENCE
    spec = dict(sc, scenario="shapes", proto=server.proto, port=server.tcp_port,
                server_pid=server.pid, users=users, rooms=rooms, shapes=shapes, time_s=time_s,
                starts=starts, reference=reference, extras=extras, half=half,
                **server.login_extra)
    timeout = time_s + 60 + users / 100
    return run_generator("bench.tcpgen", spec, timeout=timeout)


def udp_shape(server: Server, users: int, cfg: dict, time_s: float, start: float) -> dict:
    """Everyone talks over UDP (chatroom's reliable channel)."""
    sc = {k: v for k, v in cfg.items() if k in STEP}
    spec = dict(sc, port=server.udp_port, server_pid=server.pid, users=users, time_s=time_s,
                start_deliveries=start)
    return run_generator("bench.udpshape", spec, timeout=time_s + 60)


def _start(results: dict, shape: str, name: str, default: float) -> float:
    """Where a search starts: the best this server reached in this shape at a smaller N.

    Deliveries/s rarely fall as a room grows, so that is a step or two below saturation.
    """
    best = 0.0
    for row in results["shapes"].get(shape, {}).values():
        b = ((row.get(name) or {}).get("best") or {}).get("deliveries_per_s")
        best = max(best, b or 0)
    return max(default, best)


def shapes(cfg: dict, servers: list[str], tmp: Path, budget: Budget, out: Path,
           results: dict) -> None:
    """Every shape on every server; ngircd first so the others also run at half its rate."""
    sc = cfg["shapes"]
    order = sorted(servers, key=lambda n: n != REFERENCE)
    share = cfg["shares"]["shapes"]
    tasks = [("single", n) for n in sc["users"]] + [("rooms", sc["rooms_users"])]
    tasks += [("udp", n) for n in sc["udp_users"]]
    runs_left = sum(len([n for n in order if n != "chatroom-web"]) if kind != "udp"
                    else ("chatroom" in order) for kind, _ in tasks)
    runs_left += ("chatroom-web" in order) * len([n for n in sc["users"]
                                                   if n in sc["web_users"]])
    for kind, users in tasks:
        names = ["loud", "all"] if kind == "single" else [kind]
        for name in order:
            if kind == "udp" and make_server(name).udp_kind != "chatroom":
                continue
            if kind == "rooms" and name == "chatroom-irc":
                continue  # the IRC rows are the single-room shapes, beside the IRC servers
            if name == "chatroom-web" and (kind != "single" or users not in sc["web_users"]):
                continue  # the WebSocket row: one N, beside TCP line users at the same N
            runs_left -= 1
            # Each run may take its fair part of what is left, but no more than shape_s per shape.
            per = budget.left_until(share) / (runs_left + 1)
            time_s = min(sc["shape_s"] * len(names), per - 1.5)
            if time_s < 1.5 * len(names):
                for s in names:
                    results["shapes"].setdefault(s, {}).setdefault(str(users), {})[name] = {
                        "skipped": "time budget"}
                continue
            say("%s N=%d on %s (%.0fs left)" % ("/".join(names), users, name, budget.left()))
            starts = {s: _start(results, s, name, sc["start_deliveries"]) for s in names}
            reference = {}
            if name != REFERENCE:
                for s in names:
                    ref = (((results["shapes"].get(s) or {}).get(str(users)) or {})
                           .get(REFERENCE) or {}).get("best") or {}
                    if ref.get("deliveries_per_s"):
                        reference[s] = ref["deliveries_per_s"] / 2
            if kind == "udp":
                # The UDP generator runs a ReliableChannel per user in Python: its own limit
                # is far below chatroom's TCP rates, so the search starts low.
                res = with_server(name, tmp, "udp%d" % users, lambda s, u=users, t=time_s: udp_shape(
                    s, u, sc, t, sc["udp_start_deliveries"]))
                results["shapes"].setdefault("udp", {}).setdefault(str(users), {})[name] = res
            else:
                rooms = 1 if kind == "single" else sc["rooms"]
                res = with_server(name, tmp, "%s%d" % (kind, users),
                                  lambda s, u=users, r=rooms, t=time_s: tcp_shapes(
                                      s, u, r, names, sc, t, starts, reference))
                for s in names:
                    one = (res.get("shapes") or {}).get(s)
                    if one is None:
                        one = {"error": res.get("error", "no result"), "login": res.get("login")}
                    else:
                        one = dict(one, login=res.get("login"), rebuilds=res.get("rebuilds"),
                                   errors=res.get("errors"))
                    results["shapes"].setdefault(s, {}).setdefault(str(users), {})[name] = one
            _partial(out, results)


def history(cfg: dict, tmp: Path, budget: Budget) -> dict:
    """
    What the history costs: the loud shape at N=100 with history on against off, alternating
    (on, off, on, off...) so drift on the machine hits both alike; and the join replay's query
    time on a large history.
    """
    hc = cfg["history"]
    sc = dict(cfg.get("shapes") or QUICK["shapes"])
    # Capacity, not a pass/fail search: one step offered well above what either configuration
    # takes, so the server runs flat out (back-pressure holds the excess in the senders'
    # sockets) and every line still arrives; deliveries over the time to the last one is the
    # rate it sustained.  Searches with a p99 threshold swung by 15 % between rounds.
    sc["capacity"] = {"msgs_per_s": hc["capacity_msgs_per_s"], "seconds": hc["capacity_s"],
                      "drain_seconds": hc["capacity_drain_s"]}
    per_run = hc["capacity_s"] + hc["capacity_drain_s"] + 8
    runs: dict = {"chatroom": [], "chatroom-nohistory": []}
    for round_no in range(hc["rounds"]):
        for name in ("chatroom", "chatroom-nohistory"):
            if budget.left_until(cfg["shares"]["history"]) < per_run:
                runs[name].append({"skipped": "time budget"})
                continue
            say("history: loud N=%d on %s, round %d (%.0fs left)" % (
                hc["users"], name, round_no + 1, budget.left()))
            res = with_server(name, tmp, "history%d" % round_no, lambda s: tcp_shapes(
                s, hc["users"], 1, ["loud"], sc, per_run, {}, {}, extras=False))
            one = (res.get("shapes") or {}).get("loud") or {"error": res.get("error")}
            runs[name].append(one)
    # The verdict is on the medians: single rounds swing by 10-15 % on this machine (both
    # configurations alike), more than the cost being measured; the best rounds are shown too.
    figures = {name: sorted((r.get("best") or {}).get("deliveries_per_s") or 0 for r in rs)
               for name, rs in runs.items()}
    result = {"users": hc["users"], "runs": runs}
    for name, key in (("chatroom", "on"), ("chatroom-nohistory", "off")):
        done = [f for f in figures[name] if f]
        result["best_" + key] = max(done, default=0)
        result["median_" + key] = statistics.median(done) if done else 0
    if result["median_on"] and result["median_off"]:
        result["ratio"] = round(result["median_on"] / result["median_off"], 3)
        result["best_ratio"] = round(result["best_on"] / result["best_off"], 3)
    if budget.left() > 15:
        say("history: replay on %d stored messages" % hc["replay_rows"])
        try:
            proc = subprocess.run(
                ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.history_replay",
                 str(hc["replay_rows"])],
                cwd=str(REPO), stdout=subprocess.PIPE, timeout=max(60.0, budget.left()))
            figures = json.loads(proc.stdout.decode().split("\n", 1)[1])
            result["replay"] = {"rows": figures["messages"],
                                "median_ms": figures["idle"]["median_ms"],
                                "p99_ms": figures["idle"]["p99_ms"],
                                "under_writes": figures["under_writes"],
                                "file_mb": figures["file_mb"]}
        except (subprocess.SubprocessError, ValueError, IndexError) as e:
            result["replay"] = {"error": str(e)}
    else:
        result["replay"] = {"skipped": "time budget"}
    return result


def udp(server: Server, loss: float, cfg: dict) -> dict:
    """One UDP loss level for one server."""
    spec = {"kind": server.udp_kind, "port": server.udp_port, "server_pid": server.pid,
            "users": cfg["users"], "loss": loss, "msgs_per_user_per_s": cfg["msgs_per_user_per_s"],
            "duration_s": cfg["duration_s"], "reorder": cfg["reorder"],
            "drain_s": cfg["drain_s"][server.udp_kind], "seed": 1,
            "hard_timeout": cfg["duration_s"] + cfg["drain_s"][server.udp_kind] + 30}
    return run_generator("bench.udpgen", spec, timeout=spec["hard_timeout"] + 15)


def connections(server: Server, cfg: dict, users: int, login_timeout: float) -> dict:
    """Many idle users in one room for one server."""
    spec = {"scenario": "connections", "proto": server.proto, "port": server.tcp_port,
            "server_pid": server.pid, "users": users, "login_timeout": login_timeout,
            "settle_timeout": 30, "broadcast_timeout": cfg["broadcast_timeout"],
            **server.login_extra}
    return run_generator("bench.tcpgen", spec,
                         timeout=login_timeout + 30 + cfg["broadcast_timeout"] + 30)


def machine_info() -> dict:
    """Core count, CPU model, kernel and tool versions for the report header."""
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(cmd):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=10).stdout.decode(errors="replace")
            return out.strip().splitlines()[0] if out.strip() else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    twisted_version = version([sys.executable, "-c", "import twisted; print(twisted.__version__)"])
    commit = version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {"cores": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "twisted": twisted_version,
            "ngircd": version(["ngircd", "--version"]) if shutil.which("ngircd") else "",
            "inspircd": version(["inspircd", "--version"]) if shutil.which("inspircd") else "",
            "commit": commit if len(commit) < 20 else "",
            "server_cpu": SERVER_CPU, "generator_cpu": GENERATOR_CPU}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen scenarios on the chosen servers, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    mode.add_argument("--smoke", action="store_true",
                      help="seconds-long self-check: chatroom and seed, tiny N, low rates")
    parser.add_argument("--only", action="append", choices=ALL_SERVERS, metavar="SERVER",
                        help="run only this server (repeatable): %s" % ", ".join(ALL_SERVERS))
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable): %s" % ", ".join(SCENARIOS))
    parser.add_argument("--out", default=None,
                        help="directory for latest.md and latest.json (default bench/results; "
                             "--smoke: a new temporary directory)")
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else QUICK if args.quick else FULL
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    names = args.only or cfg.get("servers") or list(ALL_SERVERS)
    scenarios = args.scenario or cfg.get("scenarios") or list(SCENARIOS)
    out = Path(args.out or (tempfile.mkdtemp(prefix="chatroom-bench-smoke-") if args.smoke
                            else REPO / "bench" / "results"))
    budget = Budget(cfg["budget_s"])
    raise_nofile()
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict = {
        "mode": mode_name,
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.run" + ("" if mode_name == "full" else " --" + mode_name)
                   + "".join(" --only %s" % n for n in (args.only or []))
                   + "".join(" --scenario %s" % s for s in (args.scenario or [])),
        "params": {k: v for k, v in cfg.items() if k in scenarios or k in ("budget_s", "shares")},
        "install": {"installed": []} if args.smoke else ensure_binaries(names),
        "machine": machine_info(),
        "servers": {}, "shapes": {}, "history": {}, "udp": {}, "connections": {},
    }
    servers = []
    for name in names:
        s = make_server(name)
        why = s.available()
        results["servers"][name] = {"available": why is None, "why": why, "notes": s.notes,
                                    "proto": s.proto, "udp": s.udp_kind}
        if why:
            say("%s unavailable: %s" % (name, why))
        else:
            servers.append(name)
    tmp = Path(tempfile.mkdtemp(prefix="chatroom-bench-"))
    try:
        if "shapes" in scenarios:
            shapes(cfg, servers, tmp, budget, out, results)
        if "history" in scenarios and "chatroom" in servers:
            results["history"] = history(cfg, tmp, budget)
            _partial(out, results)
        if "udp" in scenarios:
            run_udp(cfg, names, servers, tmp, budget, out, results)
        if "connections" in scenarios:
            run_connections(cfg, servers, tmp, budget, out, results)
    except KeyboardInterrupt:
        results["interrupted"] = True
        say("interrupted; writing what was measured")
    finally:
        results["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
        _write(out, results)
        shutil.rmtree(tmp, ignore_errors=True)
    say("wrote %s and %s in %.0fs" % (out / "latest.md", out / "latest.json", results["elapsed_s"]))
    return 0


def run_udp(cfg, names, servers, tmp, budget, out, results) -> None:
    """The lossy-relay UDP scenario: every loss level on every server with a UDP transport."""
    uc = cfg["udp"]
    for loss in uc["losses"]:
        row = results["udp"].setdefault(str(loss), {})
        for name in names:
            if make_server(name).udp_kind is None:
                row[name] = {"na": "no UDP transport"}
                continue
            if name not in servers:
                continue
            if budget.left_until(cfg["shares"]["udp"]) < uc["duration_s"] + 2:
                row[name] = {"skipped": "time budget"}
                continue
            say("UDP loss=%.0f%% on %s (%.0fs left)" % (loss * 100, name, budget.left()))
            row[name] = with_server(name, tmp, "udp%s" % loss, lambda s, l=loss: udp(s, l, uc))
            _partial(out, results)


def run_connections(cfg, servers, tmp, budget, out, results) -> None:
    """Many idle users: chatroom and ngircd holding the same number of users.

    If ngircd cannot log everyone in, chatroom is measured again at the count ngircd reached,
    so the per-connection figures compare like with like (the report says which count).
    """
    cc = cfg["connections"]
    todo = [n for n in cc["servers"] if n in servers]
    todo.sort(key=lambda n: n != REFERENCE)
    for i, name in enumerate(todo):
        left = budget.left()
        per = (left - 5) / (len(todo) - i) - cc["overhead_s"]
        if per < 2:
            results["connections"][name] = {"skipped": "time budget"}
            continue
        login_timeout = min(cc["login_timeout"], per)
        say("connections N=%d on %s, login timeout %.0fs (%.0fs left)" % (
            cc["users"], name, login_timeout, left))
        res = with_server(name, tmp, "conn", lambda s, t=login_timeout: connections(
            s, cc, cc["users"], t))
        res["login_timeout_s"] = round(login_timeout, 1)
        results["connections"][name] = res
        _partial(out, results)
    ref = results["connections"].get(REFERENCE) or {}
    reached = (ref.get("login") or {}).get("logged_in")
    # chatroom with IRC clients is measured at ngircd's count only: beside ngircd, like for like.
    same = [n for n in cc.get("same_count", ()) if n in servers]
    for i, name in enumerate(same):
        if reached and (reached < cc["users"] or name not in todo) and budget.left() > 20:
            say("connections N=%d on %s, the count ngircd reached" % (reached, name))
            res = with_server(name, tmp, "conn-same", lambda s: connections(
                s, cc, reached, min(cc["login_timeout"], (budget.left() - 15) / (len(same) - i))))
            results["connections"]["%s-at-ngircd-count" % name] = res
            _partial(out, results)


def _partial(out: Path, results: dict) -> None:
    """Write the JSON so far, so an interrupted run still leaves its figures."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")


def _write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "latest.md").write_text(report.render(results))


if __name__ == "__main__":
    sys.exit(main())
