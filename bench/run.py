"""Run the chatroom benchmark: every server, every scenario, one report.

Usage (from the repository root)::

    python -m bench.run [--quick] [--only SERVER ...] [--scenario fanout|udp|connections ...]

Installs ngircd and InspIRCd with apt-get when their binaries are missing, starts each server
itself (pinned to CPU 0, fresh for every measurement), drives it with a generator pinned to
CPU 1, and writes ``bench/results/latest.md`` and ``bench/results/latest.json``. A full run keeps
to about 10 minutes, ``--quick`` to about 2; each part is skipped, and says so, when the time
budget would be exceeded. Every server process is stopped on the way out, even on errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.servers import (ALL_SERVERS, APT_PACKAGES, GENERATOR_CPU, REPO, SERVER_CPU, Server,
                           apt_install, make_server, raise_nofile)

SCENARIOS = ("fanout", "history", "udp", "connections")
REFERENCE = "ngircd"  # the latency target compares at half of ngircd's saturation rate

FULL = {
    "budget_s": 690,
    "shares": {"fanout": 0.41, "history": 0.67, "udp": 0.76},  # budget used up when each ends
    "fanout": {"users": [10, 100, 500], "step_seconds": 1.0, "grace_seconds": 0.25,
               "drain_seconds": 2.0, "probe_rate": 50, "senders": 10,
               "start_deliveries": 100000, "max_steps": 10},
    "history": {"users": 100, "rounds": 3, "replay_rows": 1000000, "start_deliveries": 3200000,
                "max_steps": 12, "resolution": 1.04, "growth": 1.2},
    "udp": {"users": 50, "losses": [0.0, 0.05, 0.2], "msgs_per_user_per_s": 2, "duration_s": 5,
            "reorder": 0.05, "drain_s": {"chatroom": 10, "seed": 1}},
    "connections": {"users": 10000, "concurrency": 500, "connect_rate": 1000, "login_timeout": 60,
                    "broadcast_timeout": 30, "overhead_s": 12},
}
QUICK = {
    "budget_s": 112,
    "shares": {"fanout": 0.5, "history": 0.62, "udp": 0.75},
    "fanout": {"users": [10, 100], "step_seconds": 0.5, "grace_seconds": 0.25,
               "drain_seconds": 1.0, "probe_rate": 100, "senders": 10,
               "start_deliveries": 400000, "max_steps": 5},
    "history": {"users": 100, "rounds": 1, "replay_rows": 1000000, "start_deliveries": 3200000,
                "max_steps": 10, "resolution": 1.04, "growth": 1.2},
    "udp": {"users": 50, "losses": [0.0, 0.2], "msgs_per_user_per_s": 2, "duration_s": 2,
            "reorder": 0.05, "drain_s": {"chatroom": 5, "seed": 0.5}},
    "connections": {"users": 1000, "concurrency": 500, "connect_rate": 1000, "login_timeout": 10,
                    "broadcast_timeout": 10, "overhead_s": 3},
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


def fanout(server: Server, users: int, cfg: dict, budget: Budget) -> dict:
    """Fan-out saturation for one server and room size."""
    spec = dict(cfg, scenario="fanout", proto=server.proto, port=server.tcp_port,
                server_pid=server.pid, users=users, **server.login_extra)
    spec.pop("users_list", None)
    return run_generator("bench.tcpgen", spec, timeout=max(30.0, min(180.0, budget.left())))


def history(cfg: dict, tmp: Path, budget: Budget) -> dict:
    """
    What the history costs: fan-out at N=100 with history on against off, alternating the two
    (on, off, on, off...) so drift on the machine hits both alike; and the join replay's query
    time on a history of a million messages.
    """
    hc = cfg["history"]
    step_cfg = {k: v for k, v in cfg["fanout"].items() if k != "users"}
    # Both configurations start at about half the saturation rate, climb by 20 % and bisect
    # to 4 %: a ratio near 0.9 needs steps a few percent apart, not the fan-out scenario's
    # doubling and 15 % bisection. Starting below saturation keeps the first failing step
    # mild, so no overload (and its dropped users) pollutes the search.
    step_cfg.update({k: hc[k] for k in ("start_deliveries", "max_steps", "resolution",
                                        "growth")})
    runs: dict = {"chatroom": [], "chatroom-nohistory": []}
    for round_no in range(hc["rounds"]):
        for name in ("chatroom", "chatroom-nohistory"):
            if budget.left_until(cfg["shares"]["history"]) < 3:
                runs[name].append({"skipped": "time budget"})
                continue
            say("history: fan-out N=%d on %s, round %d (%.0fs left)" % (
                hc["users"], name, round_no + 1, budget.left()))
            runs[name].append(with_server(
                name, tmp, "history%d" % round_no,
                lambda s: fanout(s, hc["users"], step_cfg, budget)))
    best = {name: max([(r.get("best") or {}).get("deliveries_per_s") or 0 for r in rs] or [0])
            for name, rs in runs.items()}
    result = {"users": hc["users"], "runs": runs, "best_on": best["chatroom"],
              "best_off": best["chatroom-nohistory"]}
    if best["chatroom"] and best["chatroom-nohistory"]:
        result["ratio"] = round(best["chatroom"] / best["chatroom-nohistory"], 3)
    if budget.left() > 20:
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


def udp(server: Server, loss: float, cfg: dict, budget: Budget) -> dict:
    """One UDP loss level for one server."""
    spec = {"kind": server.udp_kind, "port": server.udp_port, "server_pid": server.pid,
            "users": cfg["users"], "loss": loss, "msgs_per_user_per_s": cfg["msgs_per_user_per_s"],
            "duration_s": cfg["duration_s"], "reorder": cfg["reorder"],
            "drain_s": cfg["drain_s"][server.udp_kind], "seed": 1,
            "hard_timeout": cfg["duration_s"] + cfg["drain_s"][server.udp_kind] + 30}
    return run_generator("bench.udpgen", spec, timeout=spec["hard_timeout"] + 15)


def connections(server: Server, cfg: dict, login_timeout: float) -> dict:
    """Many idle users for one server."""
    spec = {"scenario": "connections", "proto": server.proto, "port": server.tcp_port,
            "server_pid": server.pid, "users": cfg["users"], "concurrency": cfg["concurrency"],
            "connect_rate": cfg["connect_rate"],
            "login_timeout": login_timeout, "settle_timeout": 30,
            "broadcast_timeout": cfg["broadcast_timeout"], **server.login_extra}
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
    parser.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    parser.add_argument("--only", action="append", choices=ALL_SERVERS, metavar="SERVER",
                        help="run only this server (repeatable): %s" % ", ".join(ALL_SERVERS))
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable): %s" % ", ".join(SCENARIOS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"),
                        help="directory for latest.md and latest.json")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    names = args.only or list(ALL_SERVERS)
    scenarios = args.scenario or list(SCENARIOS)
    budget = Budget(cfg["budget_s"])
    raise_nofile()
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.run" + (" --quick" if args.quick else "")
                   + "".join(" --only %s" % n for n in (args.only or []))
                   + "".join(" --scenario %s" % s for s in (args.scenario or [])),
        "params": {k: v for k, v in cfg.items() if k in scenarios or k in ("budget_s", "shares")},
        "install": ensure_binaries(names),
        "machine": machine_info(),
        "servers": {}, "fanout": {}, "history": {}, "udp": {}, "connections": {},
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
    out = Path(args.out)
    try:
        if "fanout" in scenarios:
            fc = cfg["fanout"]
            for users in fc["users"]:
                row = results["fanout"].setdefault(str(users), {})
                # ngircd first, so the others can also be measured at half its max rate
                for name in sorted(servers, key=lambda n: n != REFERENCE):
                    if budget.left_until(cfg["shares"]["fanout"]) < 3:
                        row[name] = {"skipped": "time budget"}
                        continue
                    say("fan-out N=%d on %s (%.0fs left)" % (users, name, budget.left()))
                    step_cfg = {k: v for k, v in fc.items() if k != "users"}
                    reference_best = ((row.get(REFERENCE) or {}).get("best") or {})
                    if name != REFERENCE and reference_best.get("target_deliveries_per_s"):
                        step_cfg["reference_deliveries"] = (
                            reference_best["target_deliveries_per_s"] / 2)
                    row[name] = with_server(name, tmp, "fanout%d" % users,
                                            lambda s, u=users: fanout(s, u, step_cfg, budget))
                    if name == REFERENCE and row[name].get("half"):
                        row[name]["at_reference"] = row[name]["half"]
                    _partial(out, results)
        if "history" in scenarios and "chatroom" in servers:
            results["history"] = history(cfg, tmp, budget)
            _partial(out, results)
        if "udp" in scenarios:
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
                    row[name] = with_server(name, tmp, "udp%s" % loss,
                                            lambda s, l=loss: udp(s, l, uc, budget))
                    _partial(out, results)
        if "connections" in scenarios:
            cc = cfg["connections"]
            for i, name in enumerate(servers):
                left = budget.left()
                per = (left - 5) / (len(servers) - i) - cc["overhead_s"]
                if per < 2:
                    results["connections"][name] = {"skipped": "time budget"}
                    continue
                login_timeout = min(cc["login_timeout"], per)
                say("connections N=%d on %s, login timeout %.0fs (%.0fs left)" % (
                    cc["users"], name, login_timeout, left))
                results["connections"][name] = with_server(
                    name, tmp, "conn", lambda s, t=login_timeout: connections(s, cc, t))
                results["connections"][name]["login_timeout_s"] = round(login_timeout, 1)
                _partial(out, results)
    except KeyboardInterrupt:
        results["interrupted"] = True
        say("interrupted; writing what was measured")
    finally:
        results["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
        _write(out, results)
        shutil.rmtree(tmp, ignore_errors=True)
    say("wrote %s and %s in %.0fs" % (out / "latest.md", out / "latest.json", results["elapsed_s"]))
    return 0


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
