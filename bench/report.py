"""Render the benchmark results (the dict ``bench.run`` builds) as Markdown tables."""

from __future__ import annotations


def _fmt_int(v) -> str:
    return "-" if v is None else "{:,}".format(int(round(v)))


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%." + str(digits) + "f%s") % (v, unit)
    return "%s%s" % (v, unit)


def _cell_missing(res: dict | None) -> str | None:
    if res is None:
        return "not run"
    if "na" in res:
        return "n/a (%s)" % res["na"]
    if "skipped" in res:
        return "skipped (%s)" % res["skipped"]
    if "error" in res and not res.get("steps") and "delivered_unique" not in res \
            and "login" not in res:
        return "error: %s" % res["error"]
    return None


def _rows(specs, names: list[str], row: dict) -> list[list[str]]:
    """One table row per (label, cell function), a cell per server (or why it is missing)."""
    rows = []
    for label, f in specs:
        cells = []
        for n in names:
            miss = _cell_missing(row.get(n))
            cells.append(miss if miss else f(row[n]))
        rows.append([label] + cells)
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(results: dict) -> str:
    """The whole report: header, parameters, one table per scenario, notes."""
    m = results.get("machine", {})
    servers = list(results.get("servers", {}))
    lines = [
        "# chatroom benchmark (%s run)" % results.get("mode", "?"),
        "",
        "Command: `%s`, started %s, took %s s." % (
            results.get("command"), results.get("started"), results.get("elapsed_s")),
        "",
        "Machine: **%s cores** (%s), Linux %s, Python %s, Twisted %s. Server pinned to CPU %s, "
        "load generator to CPU %s (`taskset`). ngircd: %s. InspIRCd: %s. chatroom commit: %s." % (
            m.get("cores"), m.get("cpu_model"), m.get("kernel"), m.get("python"),
            m.get("twisted"), m.get("server_cpu"), m.get("generator_cpu"),
            m.get("ngircd") or "-", m.get("inspircd") or "-", m.get("commit") or "-"),
        "",
    ]
    inst = results.get("install", {})
    if inst.get("installed") or inst.get("error"):
        lines += ["Installed with apt-get: %s %s" % (", ".join(inst.get("installed", [])),
                                                      inst.get("error", "")), ""]
    unavailable = {n: s["why"] for n, s in results.get("servers", {}).items() if not s["available"]}
    for n, why in unavailable.items():
        lines += ["**%s was not measured**: %s" % (n, why), ""]
    lines += ["## Targets", "",
              "Ratios measured in this run (fan-out: max deliveries/s at the highest passing step).",
              ""] + targets(results) + [""]
    p = results.get("params", {})

    if results.get("fanout"):
        fp = p.get("fanout", {})
        lines += [
            "## Fan-out saturation",
            "",
            "One room of N users (all logged in first). %s users send a fixed %d-byte text line "
            "at an aggregate rate that doubles each step (starting at %s deliveries/s), then "
            "narrows between the last passing and first failing step. Steps last %s s. "
            "Probe lines carrying a monotonic timestamp ride in the senders' own streams "
            "(%s per second, round robin) and are read by 4 receivers spread over the room. "
            "A step passes when every message reached all N-1 receivers within %s s after the "
            "offer stopped, no probe was missing and probe p99 < 100 ms. Deliveries/s is "
            "messages x (N-1) over the time until the last delivery." % (
                fp.get("senders"), 32, _fmt_int(fp.get("start_deliveries")),
                fp.get("step_seconds"), fp.get("probe_rate"), fp.get("grace_seconds")),
            "",
        ]
        for users, row in results["fanout"].items():
            names = [n for n in servers if n in row]
            header = ["N = %s" % users] + names
            rows = []
            specs = [
                ("max deliveries/s (passing step)", lambda r: _fmt_int((r.get("best") or {}).get("deliveries_per_s"))),
                ("offered messages/s there", lambda r: _fmt_int((r.get("best") or {}).get("offered_msgs_per_s"))),
                ("probe p50 / p99 ms there", lambda r: "%s / %s" % (
                    _fmt((r.get("best") or {}).get("p50_ms")), _fmt((r.get("best") or {}).get("p99_ms")))),
                ("first failing offer, deliveries/s", lambda r: _first_fail_text(r)),
                ("p50 / p99 ms at half the max rate", lambda r: "%s / %s" % (
                    _fmt((r.get("half") or {}).get("p50_ms")), _fmt((r.get("half") or {}).get("p99_ms")))),
                ("p50 / p99 ms at half ngircd's max rate", lambda r: "%s / %s" % (
                    _fmt((r.get("at_reference") or {}).get("p50_ms")),
                    _fmt((r.get("at_reference") or {}).get("p99_ms")))),
                ("server CPU % at max", lambda r: _fmt((r.get("best") or {}).get("server_cpu_pct"))),
                ("generator CPU % (max over steps)", lambda r: _fmt(r.get("max_gen_cpu_pct"))),
                ("steps run", lambda r: str(len(r.get("steps", [])))),
            ]
            rows += _rows(specs, names, row)
            lines += _table(header, rows) + [""]
            errs = ["%s: %s" % (n, row[n].get("error") or "; ".join(row[n].get("errors", [])[:3]))
                    for n in names if isinstance(row.get(n), dict)
                    and (row[n].get("error") or row[n].get("errors"))]
            if errs:
                lines += ["Errors at N=%s: %s" % (users, " | ".join(errs)), ""]

    if results.get("udp"):
        up = p.get("udp", {})
        lines += [
            "## UDP through a lossy relay",
            "",
            "%s UDP users in one room, each sending %s messages/s for %s s through "
            "`tests.relay.LossyRelay` (in the generator's process), which drops the given "
            "fraction of datagrams in each direction independently and reorders %s%% of the "
            "rest. Users log in with no loss; loss applies from the first load message. "
            "chatroom's users run the project's `chatservice.frontends.reliable.ReliableChannel`. "
            "Delivered fraction = distinct messages shown / (messages x (N-1)); duplicates "
            "shown = lines a user saw again. Retransmissions for chatroom = the generator's "
            "client-side retransmits plus the server's retransmitted data frames as counted "
            "at the relay (data frames it sent minus distinct sequence numbers); for the seed "
            "baseline 2 per message by design (every line is sent three times). IRC servers "
            "have no UDP transport." % (
                up.get("users"), up.get("msgs_per_user_per_s"), up.get("duration_s"),
                _fmt((up.get("reorder") or 0) * 100, digits=0)),
            "",
        ]
        for loss, row in results["udp"].items():
            names = [n for n in servers if n in row]
            header = ["loss %s%% each way" % _fmt(float(loss) * 100, digits=0)] + names
            specs = [
                ("delivered fraction", lambda r: _fmt(r.get("delivered_fraction"), digits=4)),
                ("duplicates shown to users", lambda r: "%s (%s per delivery)" % (
                    _fmt_int(r.get("duplicates_shown")), _fmt(r.get("duplicates_shown_per_delivery"), digits=3))),
                ("retransmissions per delivered message", lambda r: _fmt(r.get("retransmissions_per_delivered"), digits=3)),
                ("  of which client-side", lambda r: _fmt(r.get("client_retransmissions_per_delivered"), digits=3)),
                ("latency p50 / p99 ms", lambda r: "%s / %s" % (_fmt(r.get("p50_ms")), _fmt(r.get("p99_ms")))),
                ("messages sent / deliveries expected", lambda r: "%s / %s" % (
                    _fmt_int(r.get("messages_sent")), _fmt_int(r.get("expected_deliveries")))),
                ("generator CPU %", lambda r: _fmt(r.get("gen_cpu_pct"))),
                ("server CPU %", lambda r: _fmt(r.get("server_cpu_pct"))),
            ]
            rows = []
            rows += _rows(specs, names, row)
            lines += _table(header, rows) + [""]
            errs = ["%s: %s" % (n, row[n]["error"]) for n in names
                    if isinstance(row.get(n), dict) and row[n].get("error")]
            if errs:
                lines += ["Errors at loss %s: %s" % (loss, " | ".join(errs)), ""]

    if results.get("connections"):
        cp = p.get("connections", {})
        row = results["connections"]
        names = [n for n in servers if n in row]
        lines += [
            "## Many idle connections",
            "",
            "%s users log in (new connections at most %s per second, at most %s logging in at "
            "once; each join is announced to everyone "
            "already in the room, so the generator keeps draining every socket). Then the "
            "generator waits until the server has been quiet for 1 s, reads the server's VmRSS "
            "(from /proc/PID/status) and subtracts the idle figure taken before the first "
            "connection; then one user sends one line and the time until the last of the others "
            "has it is measured. A server that cannot log everyone in within the login timeout "
            "is measured with the users it did log in." % (
                _fmt_int(cp.get("users")), cp.get("connect_rate"), cp.get("concurrency")),
            "",
        ]
        specs = [
            ("users logged in", lambda r: "%s of %s" % (
                _fmt_int(r["login"].get("logged_in")), _fmt_int(r["login"].get("requested")))),
            ("time to log in, s", lambda r: _fmt(r["login"].get("seconds"), digits=2) + (
                "" if r["login"].get("logged_in") == r["login"].get("requested")
                else " (timeout %s s)" % r.get("login_timeout_s"))),
            ("server CPU % while logging in", lambda r: _fmt(r["login"].get("server_cpu_pct"))),
            ("join announcements received", lambda r: _fmt_int(r.get("join_lines_received"))),
            ("RSS idle / loaded, MiB", lambda r: "%s / %s" % (
                _fmt(r.get("rss_idle_kb", 0) / 1024.0), _fmt(r.get("rss_loaded_kb", 0) / 1024.0))),
            ("RSS per connection, KiB", lambda r: _fmt(r.get("rss_per_conn_kb"))),
            ("one broadcast: last receiver after, ms", lambda r: _fmt(
                None if r.get("broadcast_last_s") is None else r["broadcast_last_s"] * 1000.0)),
            ("broadcast received by", lambda r: "%s of %s" % (
                _fmt_int(r.get("broadcast_received")), _fmt_int(r.get("broadcast_expected")))),
            ("generator CPU %", lambda r: _fmt(r.get("gen_cpu_pct"))),
        ]
        rows = []
        for label, f in specs:
            cells = []
            for n in names:
                miss = _cell_missing(row.get(n))
                if miss is None and "login" not in row[n]:
                    miss = "error: %s" % row[n].get("error")
                try:
                    cells.append(miss if miss else f(row[n]))
                except (KeyError, TypeError):
                    cells.append("-")
            rows.append([label] + cells)
        lines += _table(["N = %s" % _fmt_int(cp.get("users"))] + names, rows) + [""]
        errs = ["%s: %s" % (n, row[n].get("error") or "; ".join(row[n].get("errors", [])[:3]))
                for n in names if isinstance(row.get(n), dict)
                and (row[n].get("error") or row[n].get("errors"))]
        if errs:
            lines += ["Errors: %s" % " | ".join(errs), ""]

    lines += ["## Server settings and limits that could not be raised", ""]
    for n, s in results.get("servers", {}).items():
        for note in s.get("notes", []):
            lines.append("- **%s**: %s" % (n, note))
    lines += ["", "Full figures, every step included: `latest.json` beside this file.", ""]
    return "\n".join(lines)


def _get(results: dict, *path):
    node = results
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "-"
    return "%.2fx" % (a / b)


def targets(results: dict) -> list[str]:
    """The issue's targets, as ratios measured in this run."""
    rows = []
    for users in ("100", "500"):
        ours = _get(results, "fanout", users, "chatroom", "best", "deliveries_per_s")
        ngircd = _get(results, "fanout", users, "ngircd", "best", "deliveries_per_s")
        seed = _get(results, "fanout", users, "seed", "best", "deliveries_per_s")
        r_ng = None if ours is None or not ngircd else ours / ngircd
        r_seed = None if ours is None or not seed else ours / seed
        rows.append(["fan-out N=%s vs ngircd (>= 1.0x)" % users, _ratio(ours, ngircd),
                     "-" if r_ng is None else ("met" if r_ng >= 1.0 else "NOT met")])
        rows.append(["fan-out N=%s vs seed (>= 5x)" % users, _ratio(ours, seed),
                     "-" if r_seed is None else ("met" if r_seed >= 5.0 else "NOT met")])
        ours_p99 = _get(results, "fanout", users, "chatroom", "at_reference", "p99_ms")
        ng_p99 = _get(results, "fanout", users, "ngircd", "half", "p99_ms")
        rows.append(["p99 at half ngircd's max, N=%s (<= ngircd's)" % users,
                     "%s vs %s ms" % (_fmt(ours_p99), _fmt(ng_p99)),
                     "-" if ours_p99 is None or ng_p99 is None else
                     ("met" if ours_p99 <= ng_p99 else "NOT met")])
    mem = _get(results, "connections", "chatroom", "rss_per_conn_kb")
    ng_mem = _get(results, "connections", "ngircd", "rss_per_conn_kb")
    rows.append(["memory per connection vs ngircd (<= 3x)", _ratio(mem, ng_mem),
                 "-" if mem is None or not ng_mem else ("met" if mem <= 3 * ng_mem else "NOT met")])
    last = _get(results, "connections", "chatroom", "broadcast_last_s")
    got = _get(results, "connections", "chatroom", "broadcast_received")
    want = _get(results, "connections", "chatroom", "broadcast_expected")
    users = _get(results, "connections", "chatroom", "users")
    rows.append(["broadcast to all %s users (< 1 s)" % _fmt_int(users),
                 "%s ms, %s of %s" % (_fmt(None if last is None else last * 1000),
                                       _fmt_int(got), _fmt_int(want)),
                 "-" if last is None else ("met" if last < 1.0 and got == want else "NOT met")])
    on = _get(results, "history", "best_on")
    off = _get(results, "history", "best_off")
    ratio = _get(results, "history", "ratio")
    rounds = {name: ", ".join(_fmt_int((r.get("best") or {}).get("deliveries_per_s"))
                              for r in (_get(results, "history", "runs", name) or []))
              for name in ("chatroom", "chatroom-nohistory")}
    rows.append(["fan-out N=100, history on vs off (>= 0.9x)",
                 "%s (best of rounds %s vs %s deliveries/s; each round: on %s, off %s)" % (
                     _ratio(on, off), _fmt_int(on), _fmt_int(off), rounds["chatroom"],
                     rounds["chatroom-nohistory"]),
                 "-" if ratio is None else ("met" if ratio >= 0.9 else "NOT met")])
    replay = _get(results, "history", "replay") or {}
    rows.append(["replay 20 lines, %s messages stored (< 20 ms)" % _fmt_int(replay.get("rows")),
                 "p99 %s ms, median %s ms" % (_fmt(replay.get("p99_ms"), digits=2),
                                              _fmt(replay.get("median_ms"), digits=2)),
                 "-" if replay.get("p99_ms") is None else
                 ("met" if replay["p99_ms"] < 20 else "NOT met")])
    for loss in ("0.2",):
        frac = _get(results, "udp", loss, "chatroom", "delivered_fraction")
        dups = _get(results, "udp", loss, "chatroom", "duplicates_shown")
        rows.append(["UDP at 20% loss: 100% delivered, 0 duplicates",
                     "%s delivered, %s duplicates" % (_fmt(frac, digits=4), _fmt_int(dups)),
                     "-" if frac is None else ("met" if frac == 1.0 and dups == 0 else "NOT met")])
    return _table(["target", "measured (chatroom / reference)", "verdict"], rows)


def _first_fail_text(r: dict) -> str:
    fail = _first_fail(r)
    if fail is not None:
        return _fmt_int(fail)
    offered = [s["target_deliveries_per_s"] for s in r.get("steps", [])]
    return "none up to %s" % _fmt_int(max(offered)) if offered else "-"


def _first_fail(r: dict):
    fails = [s["target_deliveries_per_s"] for s in r.get("steps", []) if not s.get("ok")]
    return min(fails) if fails else None
