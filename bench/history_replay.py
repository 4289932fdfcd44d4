"""
Benchmark of the join replay: the last 20 lines of a room whose history holds a million messages,
asked through the real L{SQLiteHistory} (adbapi pool, its thread, the real reactor), as the hub
asks it when someone joins.

    python -m bench.history_replay [MESSAGES]    (default 1,000,000)

It builds the history in a temporary directory, straight through sqlite3 in one transaction but
in the store's own layout: the messages are cut into turns of 1 to 250 records spread over the
rooms, and each turn is packed by the store's own code into one chunk per room (1 to 50 events a
chunk), as a busy server writes them.  Then it times C{recent(room, 20, before=newest + 1)} many
times, round-robin over the rooms: first on an idle store, then while chat is being written (a
few dozen records per query, so writes are buffered and in flight as queries run).  Every answer
is checked: 20 lines, of that room, in order, ending at that room's newest line (or at the newest
live line).  Prints, and returns from L{run}, a dict of the figures; the target is a median and
p99 under 20 ms.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, task

from chatservice.backends.history import _INSERT, SQLiteHistory, _chunk_rows, prepare
from chatservice.core.events import Emote, Joined, Said
from chatservice.core.ids import EPOCH
from chatservice.core.names import fold

MESSAGES = 1_000_000
ROOMS = ("#lobby", "#Dev", "#ops", "#random", "#support")
LIMIT = 20
QUERIES = 2000
WRITES_PER_QUERY = 25
TARGET_MS = 20.0
T0 = 1_700_000_000.0
TURN_MAX = 250
"""Records per turn at most (uniform 1 to this): 1 to 50 per room's chunk."""


def _id(i: int) -> int:
    """The id of message C{i}, shaped like the service's (milliseconds since its epoch, then
    node and sequence bits), one message every 10 ms."""
    return (int((T0 - EPOCH) * 1000) + i * 10) << 22


def build(path: str, messages: int) -> dict:
    """A prepared history file with C{messages} lines (every 10th an emote) spread over
    L{ROOMS}, plus a join per 50 lines, written as a server writes them (see the module
    docstring); return the newest id of each room."""
    prepare(path)
    newest = {}
    turns = random.Random(1)

    def events():
        for i in range(1, messages + 1):
            room = ROOMS[i % len(ROOMS)]
            time = T0 + i * 0.01
            if i % 50 == 0:
                yield Joined(_id(i) - 1, time, room, f"u{i % 97}", "tcp")
            kind = Emote if i % 10 == 0 else Said
            yield kind(_id(i), time, room, f"u{i % 97}", f"message number {i}")
            newest[fold(room)] = _id(i)

    def rows():
        batch = []
        size = turns.randint(1, TURN_MAX)
        for event in events():
            batch.append(event)
            if len(batch) >= size:
                yield from _chunk_rows(batch)
                batch = []
                size = turns.randint(1, TURN_MAX)
        if batch:
            yield from _chunk_rows(batch)

    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(_INSERT, rows())
    connection.close()
    return newest


def _check(events, room_key: str, last_id: int) -> None:
    ids = [event.id for event in events]
    assert len(events) == LIMIT, f"{room_key}: {len(events)} lines, not {LIMIT}"
    assert ids == sorted(set(ids)), f"{room_key}: ids out of order or repeated: {ids}"
    assert all(
        fold(event.room) == room_key for event in events
    ), f"{room_key}: a line of another room"
    assert ids[-1] == last_id, f"{room_key}: ends at {ids[-1]}, not {last_id}"


def _summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "queries": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


@defer.inlineCallbacks
def measure(reactor, path: str, newest: dict, queries: int):
    """Time the replays on the real store: idle, then under writes."""
    store = SQLiteHistory(path, reactor)
    yield store.start()
    keys = [fold(room) for room in ROOMS]
    before = max(newest.values()) + 1
    started = time.perf_counter()
    first = yield store.recent(keys[0], LIMIT, before)
    cold = time.perf_counter() - started
    _check(first, keys[0], newest[keys[0]])

    idle = []
    for i in range(queries):
        key = keys[i % len(keys)]
        started = time.perf_counter()
        events = yield store.recent(key, LIMIT, before)
        idle.append(time.perf_counter() - started)
        _check(events, key, newest[key])

    busy = []
    next_id = before
    for i in range(queries):
        for _ in range(WRITES_PER_QUERY):
            room = ROOMS[next_id % len(ROOMS)]
            store.record(Said(next_id, reactor.seconds(), room, "live", f"live {next_id}"))
            newest[fold(room)] = next_id
            next_id += 1
        key = keys[i % len(keys)]
        started = time.perf_counter()
        events = yield store.recent(key, LIMIT, next_id)
        busy.append(time.perf_counter() - started)
        _check(events, key, newest[key])
        if i % 10 == 0:
            # Let the reactor turn so that buffered records are handed to the pool.
            yield task.deferLater(reactor, 0, lambda: None)
    yield store.stop()
    return cold, idle, busy, next_id - before


def run(messages: int = MESSAGES, queries: int = QUERIES) -> dict:
    """Build, measure, and return the figures.  Runs the reactor: once per process."""
    figures: dict = {}

    async def collect(reactor):
        figures.update(await _collect(reactor, messages, queries))

    try:
        task.react(lambda reactor: defer.ensureDeferred(collect(reactor)))
    except SystemExit as stop:  # react() always exits; only a failure is worth raising
        if stop.code:
            raise
    return figures


def main() -> dict:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else MESSAGES
    figures = run(messages)
    idle, busy = figures["idle"], figures["under_writes"]
    print(
        f"replay of {LIMIT} lines, {figures['messages']:,} messages in {figures['rooms']} rooms "
        f"({figures['file_mb']} MB): idle median {idle['median_ms']} ms, p99 {idle['p99_ms']} ms; "
        f"under writes median {busy['median_ms']} ms, p99 {busy['p99_ms']} ms "
        f"(target < {TARGET_MS:g} ms: {'met' if figures['ok'] else 'MISSED'})"
    )
    print(json.dumps(figures, indent=2))
    return figures


async def _collect(reactor, messages, queries) -> dict:
    with tempfile.TemporaryDirectory(prefix="chatroom-bench-") as directory:
        path = os.path.join(directory, "history.sqlite3")
        started = time.perf_counter()
        newest = build(path, messages)
        built = time.perf_counter() - started
        started = time.perf_counter()
        prepare(path)  # what a restart on this file costs: checks and migration
        prepared = time.perf_counter() - started
        size = os.path.getsize(path)
        connection = sqlite3.connect(path)
        (chunks,) = connection.execute("SELECT count(*) FROM chunks").fetchone()
        connection.close()
        cold, idle, busy, written = await measure(reactor, path, newest, queries)
    figures = {
        "messages": messages,
        "rooms": len(ROOMS),
        "limit": LIMIT,
        "file_mb": round(size / 1e6, 1),
        "chunks": chunks,
        "build_s": round(built, 2),
        "restart_prepare_s": round(prepared, 3),
        "cold_first_ms": round(cold * 1000, 3),
        "idle": _summary(idle),
        "under_writes": dict(_summary(busy), records_written=written),
        "target_ms": TARGET_MS,
    }
    figures["ok"] = (
        max(
            figures["idle"]["median_ms"],
            figures["idle"]["p99_ms"],
            figures["under_writes"]["median_ms"],
            figures["under_writes"]["p99_ms"],
        )
        < TARGET_MS
    )
    return figures


if __name__ == "__main__":
    main()
