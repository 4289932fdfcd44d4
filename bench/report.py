"""Render the benchmark results (the dict ``bench.run`` builds) as Markdown tables."""

from __future__ import annotations

SHAPE_TITLES = {
    "loud": "few loud senders: 10 users send, all lines due in a tick in one send",
    "all": "everyone talks: all N users send, one line per send, interleaved",
    "rooms": "many rooms: rooms of 10, everyone talks, one line per send",
    "udp": "everyone talks over UDP (chatroom's reliable channel)",
}
CPU_SATURATED = 80.0  # a failing step below this server CPU % points at a limit, not saturation
GEN_SATURATED = 80.0  # a step that fell behind its schedule with the generator this busy measured it


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
    measured = res.get("steps") or "delivered_unique" in res or "rss_idle_kb" in res
    if "error" in res and not measured:
        return "error: %s" % res["error"]
    return None


def _rows(specs, names: list[str], row: dict) -> list[list[str]]:
    """One table row per (label, cell function), a cell per server (or why it is missing)."""
    rows = []
    for label, f in specs:
        cells = []
        for n in names:
            miss = _cell_missing(row.get(n))
            if miss:
                cells.append(miss)
                continue
            try:
                cells.append(f(row[n]))
            except (KeyError, TypeError, AttributeError):
                cells.append("-")
        rows.append([label] + cells)
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _get(results: dict, *path):
    node = results
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def held_back(res: dict | None) -> str | None:
    """Why a server's best figure is not its CPU's limit, if the first failing step says so.

    A step that fails while the server's CPU is below 80 % failed on a limit (a throttle, a
    buffer cap that closed connections), not on saturation; one the generator could not offer
    on schedule measured the generator; a search without a failing step never found the
    limit. In each case the figure is a lower bound, not the server's capacity.
    """
    if not res or not res.get("steps"):
        return None
    if res.get("first_fail_rate") is None:
        return "not saturated: no step failed up to %s msg/s" % _fmt_int(
            max(s["offered_msgs_per_s"] for s in res["steps"]))
    for s in res.get("steps", []):
        if s.get("rate") == res["first_fail_rate"] and not s.get("ok"):
            if any("generator fell" in w for w in s.get("why", [])) and \
                    (s.get("gen_cpu_pct") or 0) >= GEN_SATURATED:
                return "generator-bound at %s msg/s offered (generator CPU %s%%, server %s%%)" % (
                    _fmt_int(s.get("offered_msgs_per_s")), _fmt(s.get("gen_cpu_pct")),
                    _fmt(s.get("server_cpu_pct")))
            if (s.get("server_cpu_pct") or 0) < CPU_SATURATED:
                return "held back at %s msg/s offered, server CPU %s%%: %s" % (
                    _fmt_int(s.get("offered_msgs_per_s")), _fmt(s.get("server_cpu_pct")),
                    "; ".join(s.get("why", [])))
    return None


def _best(r: dict, key: str):
    return (r.get("best") or {}).get(key)


def _overload_text(r: dict) -> str:
    ov = r.get("overload")
    if not ov:
        return "-"
    arrived = ov["short_receivers"] == 0 and ov["over_receivers"] == 0
    return "%s msg/s: %s closed, %s (%s short by %s, %s over), all by %s s" % (
        _fmt_int(ov["offered_msgs_per_s"]), ov["closed_connections"],
        "every line arrived" if arrived else "lines lost",
        ov["short_receivers"], _fmt_int(ov["short_by"]), ov["over_receivers"],
        _fmt(ov["last_delivery_after_s"], digits=2))


def _overload_ok(r: dict | None) -> bool | None:
    ov = (r or {}).get("overload")
    if not ov:
        return None
    return ov["closed_connections"] == 0 and ov["short_receivers"] == 0 \
        and ov["over_receivers"] == 0


def _verdict(ok: bool | None, ref_limit: str | None = None) -> str:
    if ok is None:
        return "-"
    if ref_limit:
        return "not counted (ngircd held back)"
    return "met" if ok else "NOT met"


def _shape_row(label: str, ours: dict, ng: dict, seed: dict | None) -> list[str]:
    """One row of the shape targets: C{ours} against ngircd (and the seed baseline, if given)."""
    d_ours, d_ng = _best(ours, "deliveries_per_s"), _best(ng, "deliveries_per_s")
    limit = held_back(ng)
    r_ng = d_ours / d_ng if d_ours is not None and d_ng else None
    p_ours = (ours.get("at_reference") or {}).get("p99_ms")
    p_ng = (ng.get("half") or {}).get("p99_ms")
    p_ok = None
    if p_ng is not None and ours.get("at_reference"):
        p_ok = p_ours is not None and p_ours <= p_ng and ours["at_reference"]["ok"]
    mine = held_back(ours)
    if seed is None:
        seed_cells = ["-", "-"]
    else:
        d_seed = _best(seed, "deliveries_per_s")
        r_seed = d_ours / d_seed if d_ours is not None and d_seed else None
        seed_cells = [_fmt_int(d_seed),
                      "-" if r_seed is None else "%.2fx: %s" % (r_seed, _verdict(r_seed >= 5.0))]
    return [
        label, _fmt_int(d_ours) + (" (%s)" % mine if mine else ""),
        _fmt_int(d_ng) + (" (held back)" if limit else ""),
        "-" if r_ng is None else "%.2fx: %s" % (r_ng, _verdict(r_ng >= 1.0, limit)),
        *seed_cells,
        "%s vs %s ms: %s" % (_fmt(p_ours), _fmt(p_ng), _verdict(p_ok, limit)),
        _verdict(_overload_ok(ours)),
    ]


def shape_targets(results: dict) -> list[str]:
    """The issue's throughput and latency targets per shape and N, with overload verdicts;
    chatroom with IRC clients (like for like with ngircd) in a row of its own."""
    rows = []
    for shape in ("loud", "all", "rooms", "udp"):
        for users, row in (results.get("shapes", {}).get(shape) or {}).items():
            ng = row.get("ngircd") or {}
            rows.append(_shape_row("%s N=%s" % (shape, users), row.get("chatroom") or {}, ng,
                                   row.get("seed") or {}))
            if row.get("chatroom-irc") is not None:
                rows.append(_shape_row("IRC %s N=%s" % (shape, users), row["chatroom-irc"], ng,
                                       None))
    return _table(["shape", "chatroom deliveries/s", "ngircd", "vs ngircd (>= 1.0x)", "seed",
                   "vs seed (>= 5x)", "p99 at half ngircd's best, chatroom vs ngircd (<=)",
                   "chatroom at 2x saturation: no connection closed, every line arrived"], rows)


def web_targets(results: dict) -> list[str]:
    """WebSocket users against TCP line users: the same server, the same N, the same run."""
    rows = []
    for shape in ("loud", "all"):
        for users, row in (results.get("shapes", {}).get(shape) or {}).items():
            web, line = row.get("chatroom-web"), row.get("chatroom")
            if web is None:
                continue
            d_web, d_line = _best(web, "deliveries_per_s"), _best(line or {}, "deliveries_per_s")
            mine = held_back(web)
            rows.append(["%s N=%s" % (shape, users),
                         _fmt_int(d_web) + (" (%s)" % mine if mine else ""), _fmt_int(d_line),
                         "-" if not d_web or not d_line else "%.2fx" % (d_web / d_line),
                         _verdict(_overload_ok(web))])
    if not rows:
        return []
    return _table(["shape", "WebSocket users, deliveries/s", "TCP line users", "ratio",
                   "WebSocket at 2x saturation: no connection closed, every line arrived"], rows)


def _memory_row(label: str, ours: dict, ng: dict) -> list[str]:
    """Memory per connection against ngircd's; counted only at the same number of users."""
    mem, ng_mem = ours.get("rss_per_conn_kb"), ng.get("rss_per_conn_kb")
    both = "%s vs %s users" % (_fmt_int(ours.get("connected_at_broadcast")),
                               _fmt_int(ng.get("connected_at_broadcast")))
    alike = ours.get("connected_at_broadcast") == ng.get("connected_at_broadcast")
    known = mem is not None and ng_mem
    return [label,
            "%s (%s vs %s KiB, %s%s)" % ("%.2fx" % (mem / ng_mem) if known else "-", _fmt(mem),
                                        _fmt(ng_mem), both,
                                        "" if alike else ": not the same count"),
            "-" if not known else "not counted" if not alike else
            ("met" if mem <= 3 * ng_mem else "NOT met")]


def _broadcast_row(label: str, res: dict) -> list[str]:
    """One line to everyone logged in: time to the last receiver, and how many got it."""
    last, got, want = (res.get("broadcast_last_s"), res.get("broadcast_received"),
                       res.get("broadcast_expected"))
    return [label,
            "%s ms, %s of %s" % (_fmt(None if last is None else last * 1000),
                                  _fmt_int(got), _fmt_int(want)),
            "-" if last is None else ("met" if last < 1.0 and got == want else "NOT met")]


def other_targets(results: dict) -> list[str]:
    """Memory, broadcast, history, replay and UDP-loss targets."""
    rows = []
    conn = results.get("connections") or {}
    ng = conn.get("ngircd") or {}
    same = conn.get("chatroom-at-ngircd-count")
    ours = same if same and "rss_per_conn_kb" in same else conn.get("chatroom") or {}
    rows.append(_memory_row("memory per connection vs ngircd, same user count (<= 3x)", ours, ng))
    irc = conn.get("chatroom-irc-at-ngircd-count") or conn.get("chatroom-irc")
    if irc:
        rows.append(_memory_row("IRC: memory per connection vs ngircd, same user count (<= 3x)",
                                irc, ng))
    ch = conn.get("chatroom") or {}
    rows.append(_broadcast_row("broadcast to all %s users (< 1 s)" % _fmt_int(ch.get("users")),
                               ch))
    if irc:
        rows.append(_broadcast_row("IRC: broadcast to all %s users, ngircd's count (< 1 s)"
                                   % _fmt_int(irc.get("users")), irc))
    on, off, ratio, best = (_get(results, "history", k)
                            for k in ("median_on", "median_off", "ratio", "best_ratio"))
    rounds = {name: ", ".join(_fmt_int((r.get("best") or {}).get("deliveries_per_s"))
                              for r in (_get(results, "history", "runs", name) or []))
              for name in ("chatroom", "chatroom-nohistory")}
    rows.append(["fan-out capacity N=100, history on vs off (>= 0.9x)",
                 "%s (medians of rounds %s vs %s deliveries/s; best rounds %s; each round: on %s,"
                 " off %s)" % ("-" if ratio is None else "%.2fx" % ratio, _fmt_int(on),
                               _fmt_int(off), "-" if best is None else "%.2fx" % best,
                               rounds["chatroom"], rounds["chatroom-nohistory"]),
                 "-" if ratio is None else ("met" if ratio >= 0.9 else "NOT met")])
    replay = _get(results, "history", "replay") or {}
    rows.append(["replay 20 lines, %s messages stored (< 20 ms)" % _fmt_int(replay.get("rows")),
                 "p99 %s ms, median %s ms" % (_fmt(replay.get("p99_ms"), digits=2),
                                              _fmt(replay.get("median_ms"), digits=2)),
                 "-" if replay.get("p99_ms") is None else
                 ("met" if replay["p99_ms"] < 20 else "NOT met")])
    frac = _get(results, "udp", "0.2", "chatroom", "delivered_fraction")
    dups = _get(results, "udp", "0.2", "chatroom", "duplicates_shown")
    rows.append(["UDP at 20% loss: 100% delivered, 0 duplicates",
                 "%s delivered, %s duplicates" % (_fmt(frac, digits=4), _fmt_int(dups)),
                 "-" if frac is None else ("met" if frac == 1.0 and dups == 0 else "NOT met")])
    return _table(["target", "measured (chatroom / reference)", "verdict"], rows)


def _shape_section(results: dict, servers: list[str]) -> list[str]:
    p = (results.get("params") or {}).get("shapes") or {}
    lines = [
        "## Load shapes",
        "",
        "Every load line is `m<sender>.<seq> <padding>` (about 32 bytes of text). A step offers "
        "a rate for %s s; every receiver's lines are counted on its own socket and must equal "
        "exactly what the other senders in its room sent (short or over by one line fails the "
        "step); sampled receivers (3 per room, or one in every tenth room) also check every "
        "sender's lines arrive once and in order. A step passes when every receiver had its "
        "count %s s after the offer stopped, none got more once the room was quiet, no "
        "connection was closed and probe p99 < 100 ms. The rate doubles until a step fails, "
        "then bisects (to %s). Deliveries/s = lines delivered / time to the last one. Then one "
        "step at half the best rate, one at half ngircd's best (others), and one at twice the "
        "best with a %s s drain (overload). Offered and achieved message rates of every step "
        "are in the JSON." % (p.get("step_seconds"), p.get("grace_seconds"),
                              p.get("resolution"), p.get("overload_drain_seconds")),
        "",
    ]
    for shape in ("loud", "all", "rooms", "udp"):
        table = results.get("shapes", {}).get(shape) or {}
        if not table:
            continue
        lines += ["### %s" % SHAPE_TITLES[shape], ""]
        for users, row in table.items():
            names = [n for n in servers if n in row]
            specs = [
                ("max deliveries/s (passing step)", lambda r: _fmt_int(_best(r, "deliveries_per_s"))
                 + (" **(%s)**" % held_back(r) if held_back(r) else "")),
                ("messages/s offered / achieved there", lambda r: "%s / %s" % (
                    _fmt_int(_best(r, "offered_msgs_per_s")), _fmt_int(_best(r, "achieved_msgs_per_s")))),
                ("probe p50 / p99 ms there", lambda r: "%s / %s" % (
                    _fmt(_best(r, "p50_ms")), _fmt(_best(r, "p99_ms")))),
                ("first failing offer, msg/s: why", lambda r: _first_fail_text(r)),
                ("p50 / p99 ms at half the max rate", lambda r: "%s / %s" % (
                    _fmt((r.get("half") or {}).get("p50_ms")), _fmt((r.get("half") or {}).get("p99_ms")))),
                ("p50 / p99 ms at half ngircd's max", lambda r: "%s / %s%s" % (
                    _fmt((r.get("at_reference") or {}).get("p50_ms")),
                    _fmt((r.get("at_reference") or {}).get("p99_ms")),
                    "" if (r.get("at_reference") or {}).get("ok", True) else " (step failed)")),
                ("at 2x the max rate (overload)", _overload_text),
                ("server / generator CPU % at max", lambda r: "%s / %s" % (
                    _fmt(_best(r, "server_cpu_pct")), _fmt(_best(r, "gen_cpu_pct")))),
                ("generator CPU % (max over steps)", lambda r: _fmt(r.get("max_gen_cpu_pct"))),
                ("steps run (exact-count failures)", lambda r: "%d (%d)" % (
                    len(r.get("steps", [])), sum(1 for s in r.get("steps", [])
                                                 if s["short_receivers"] or s["over_receivers"]))),
            ]
            header = ["N = %s%s" % (users, "" if shape != "rooms" else " in %s rooms" % (
                p.get("rooms")))] + names
            lines += _table(header, _rows(specs, names, row)) + [""]
            errs = ["%s: %s" % (n, row[n].get("error") or "; ".join((row[n].get("errors") or [])[:3]))
                    for n in names if isinstance(row.get(n), dict)
                    and (row[n].get("error") or row[n].get("errors"))]
            if errs:
                lines += ["Errors (%s N=%s): %s" % (shape, users, " | ".join(errs)), ""]
    return lines


def _first_fail_text(r: dict) -> str:
    rate = r.get("first_fail_rate")
    if rate is None:
        steps = r.get("steps", [])
        return "none up to %s" % _fmt_int(max(s["offered_msgs_per_s"] for s in steps)) \
            if steps else "-"
    for s in r.get("steps", []):
        if s.get("rate") == rate:
            return "%s: %s" % (_fmt_int(s["offered_msgs_per_s"]), "; ".join(s.get("why", [])))
    return _fmt_int(rate)


def _udp_section(results: dict, servers: list[str]) -> list[str]:
    up = (results.get("params") or {}).get("udp") or {}
    lines = [
        "## UDP through a lossy relay",
        "",
        "%s UDP users in one room, each sending %s messages/s for %s s through "
        "`tests.relay.LossyRelay` (in the generator's process), which drops the given "
        "fraction of datagrams in each direction independently and reorders %s%% of the "
        "rest. chatroom's users run the project's `ReliableChannel`. Delivered fraction = "
        "distinct messages shown / (messages x (N-1)); retransmissions for chatroom = the "
        "generator's client-side retransmits plus the server's retransmitted data frames "
        "counted at the relay; for the seed baseline 2 per message by design." % (
            up.get("users"), up.get("msgs_per_user_per_s"), up.get("duration_s"),
            _fmt((up.get("reorder") or 0) * 100, digits=0)),
        "",
    ]
    for loss, row in results["udp"].items():
        names = [n for n in servers if n in row]
        specs = [
            ("delivered fraction", lambda r: _fmt(r.get("delivered_fraction"), digits=4)),
            ("duplicates shown to users", lambda r: "%s (%s per delivery)" % (
                _fmt_int(r.get("duplicates_shown")), _fmt(r.get("duplicates_shown_per_delivery"), digits=3))),
            ("retransmissions per delivered message", lambda r: _fmt(r.get("retransmissions_per_delivered"), digits=3)),
            ("latency p50 / p99 ms", lambda r: "%s / %s" % (_fmt(r.get("p50_ms")), _fmt(r.get("p99_ms")))),
            ("messages sent / deliveries expected", lambda r: "%s / %s" % (
                _fmt_int(r.get("messages_sent")), _fmt_int(r.get("expected_deliveries")))),
            ("generator / server CPU %", lambda r: "%s / %s" % (
                _fmt(r.get("gen_cpu_pct")), _fmt(r.get("server_cpu_pct")))),
        ]
        header = ["loss %s%% each way" % _fmt(float(loss) * 100, digits=0)] + names
        lines += _table(header, _rows(specs, names, row)) + [""]
    return lines


def _connections_section(results: dict) -> list[str]:
    cp = (results.get("params") or {}).get("connections") or {}
    row = results["connections"]
    names = list(row)
    lines = [
        "## Many idle connections",
        "",
        "%s users log in to one room (chatroom, seed and InspIRCd: at most 1,000 new connections "
        "per second, 500 logging in at once; ngircd: 8 at once, as its listen backlog is 10) "
        "while the generator drains every socket (each join is announced to the room). After "
        "the server was quiet for 1 s the generator reads its VmRSS and subtracts the figure "
        "from before the first connection; then one user sends one line and the time until "
        "the last of the others has it is measured. `chatroom-at-ngircd-count` (and "
        "`chatroom-irc-at-ngircd-count`) is chatroom (with IRC clients) measured again with as "
        "many users as ngircd logged in (only when ngircd fell short), so memory per connection "
        "compares at the same count." % _fmt_int(cp.get("users")),
        "",
    ]
    specs = [
        ("users logged in", lambda r: "%s of %s" % (
            _fmt_int(r["login"].get("logged_in")), _fmt_int(r["login"].get("requested")))),
        ("time to log in, s", lambda r: _fmt(r["login"].get("seconds"), digits=2)),
        ("server CPU % while logging in", lambda r: _fmt(r["login"].get("server_cpu_pct"))),
        ("RSS idle / loaded, MiB", lambda r: "%s / %s" % (
            _fmt(r.get("rss_idle_kb", 0) / 1024.0), _fmt(r.get("rss_loaded_kb", 0) / 1024.0))),
        ("RSS per connection, KiB", lambda r: _fmt(r.get("rss_per_conn_kb"))),
        ("one broadcast: last receiver after, ms", lambda r: _fmt(
            None if r.get("broadcast_last_s") is None else r["broadcast_last_s"] * 1000.0)),
        ("broadcast received by", lambda r: "%s of %s" % (
            _fmt_int(r.get("broadcast_received")), _fmt_int(r.get("broadcast_expected")))),
        ("generator CPU %", lambda r: _fmt(r.get("gen_cpu_pct"))),
    ]
    lines += _table(["N = %s" % _fmt_int(cp.get("users"))] + names,
                    _rows(specs, names, row)) + [""]
    errs = ["%s: %s" % (n, row[n].get("error") or "; ".join((row[n].get("errors") or [])[:3]))
            for n in names if isinstance(row.get(n), dict)
            and (row[n].get("error") or row[n].get("errors"))]
    if errs:
        lines += ["Errors: %s" % " | ".join(errs), ""]
    return lines


def render(results: dict) -> str:
    """The whole report: header, targets, one section per scenario, server notes."""
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
    for n, s in results.get("servers", {}).items():
        if not s["available"]:
            lines += ["**%s was not measured**: %s" % (n, s["why"]), ""]
    if results.get("shapes"):
        lines += ["## Targets", "",
                  "Ratios measured in this run, at the highest passing step of each server. "
                  "\"held back\": ngircd's figure is not its capacity (its first failing step "
                  "had its CPU below 80 %, or the generator could not keep to its schedule, "
                  "or no step failed), so the ratio is not counted as met; the reason is "
                  "in the shape tables below. chatroom's own figure is marked the same way "
                  "(then it is only a lower bound).",
                  ""] + shape_targets(results) + [""]
        web = web_targets(results)
        if web:
            lines += ["WebSocket users (the web page's protocol, `chatroom-web`) against TCP "
                      "line users (`chatroom`), in this run; no target is set, the ratio is "
                      "reported. A WebSocket user also gets its own lines back (as the page "
                      "does), so a room of N gets N deliveries per line, not N-1.", ""] + web + [""]
    lines += other_targets(results) + [""]
    if results.get("shapes"):
        lines += _shape_section(results, servers)
    if results.get("udp"):
        lines += _udp_section(results, servers)
    if results.get("connections"):
        lines += _connections_section(results)
    lines += ["## Server settings and limits that could not be raised", ""]
    for n, s in results.get("servers", {}).items():
        for note in s.get("notes", []):
            lines.append("- **%s**: %s" % (n, note))
    lines += ["", "Full figures, every step included: `latest.json` beside this file.", ""]
    return "\n".join(lines)
