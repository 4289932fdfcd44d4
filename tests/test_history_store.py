"""
The SQLite history store: the file checks at start, batched writes, replay
queries, retention, failure and recovery, and its service.

Most tests drive the store with L{task.Clock} and L{SyncPool}, a pool that
runs each interaction at once (or when told) on a real sqlite3 connection to
a real file, so they need no reactor; L{RealPoolTests} use the real adbapi
pool and threads on the real reactor.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from chatservice.backends import history
from chatservice.backends.history import (
    MAX_READS,
    HistoryFileError,
    HistoryService,
    SQLiteHistory,
    prepare,
    stored_events,
)
from chatservice.core.events import (
    Emote,
    Joined,
    Left,
    Parted,
    Private,
    Renamed,
    Said,
    TopicChanged,
)
from chatservice.core.errors import Unavailable
from chatservice.core.interfaces import IHistoryStore

DAY = 86400.0
T0 = 1_700_000_000.0


def said(id_, room="#lobby", nick="alice", text=None, time=None):
    """A Said with defaults derived from its id."""
    return Said(
        id_, T0 + id_ if time is None else time, room, nick, f"line {id_}" if text is None else text
    )


def rows(path, sql="SELECT room_key, first_id, last_id, lines FROM chunks ORDER BY rowid"):
    """What the file holds, read as another process would: by default its
    chunks (room, first and last id, public lines), in the order written."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def ids(path):
    """The ids of the events stored, in order (a rename or quit once per room)."""
    return [event.id for event in stored_events(path)]


def write(path, events, per_chunk=None):
    """Store C{events} straight into the file, packed as the store packs them:
    one write of them all, or one per C{per_chunk} events."""
    events = list(events)
    size = per_chunk or max(1, len(events))
    connection = sqlite3.connect(path)
    with connection:
        for start in range(0, len(events), size):
            connection.executemany(
                history._INSERT, history._chunk_rows(events[start : start + size])
            )
    connection.close()


def snapshot(path):
    """The bytes of a file and the names beside it, to prove it untouched."""
    with open(path, "rb") as handle:
        data = handle.read()
    return data, sorted(os.listdir(os.path.dirname(path)))


def temp_dir(case) -> str:
    """A fresh directory, removed after the test (C{mktemp} would leave it in the
    working directory under pytest, which is the checkout)."""
    path = tempfile.mkdtemp(prefix="chatroom-history-test-")
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class StoreError(sqlite3.OperationalError):
    """What L{SyncPool} raises while failing."""


class SyncPool:
    """
    A stand-in for C{adbapi.ConnectionPool} that runs each interaction at once
    on a real sqlite3 connection, committing or rolling back as adbapi does.

    While C{hold} is set, interactions wait in C{held} until L{release}; while
    C{failing} is set they fail with L{StoreError} without touching the file.
    """

    def __init__(self, dbapi_name, database, **kwargs):
        self.database = database
        self.kwargs = kwargs
        self.connection = None  # opened on first use, in "the thread", as adbapi does
        self.calls: list[str] = []
        self.held: list = []
        self.hold = False
        self.failing = False
        self.started = False
        self.closed = False

    def start(self):
        self.started = True

    def runInteraction(self, interaction, *args):
        return self._start(interaction, args, whole_connection=False)

    def runWithConnection(self, interaction, *args):
        return self._start(interaction, args, whole_connection=True)

    def _start(self, interaction, args, whole_connection):
        self.calls.append(interaction.__name__)
        if self.hold:
            d = defer.Deferred()
            self.held.append((d, interaction, args, whole_connection))
            return d
        return self._run(interaction, args, whole_connection)

    def connect(self):
        """Open the connection, as adbapi does on first use and on reconnect."""
        self.connection = sqlite3.connect(self.database, uri=self.kwargs.get("uri", False))
        self.kwargs["cp_openfun"](self.connection)

    def _run(self, interaction, args, whole_connection):
        if self.failing:
            return defer.fail(StoreError("disk I/O error"))
        try:
            if self.connection is None:
                self.connect()
        except sqlite3.Error:
            self.connection = None
            return defer.fail()
        try:
            if whole_connection:
                result = interaction(_PoolConnection(self), *args)
            else:
                result = interaction(self.connection.cursor(), *args)
                self.connection.commit()
        except Exception:
            if self.connection is not None:
                self.connection.rollback()
            return defer.fail()
        return defer.succeed(result)

    def release(self):
        """Run the held interactions, in order, and fire their Deferreds."""
        held, self.held = self.held, []
        for d, interaction, args, whole_connection in held:
            self._run(interaction, args, whole_connection).chainDeferred(d)

    def close(self):
        self.closed = True
        if self.connection is not None:
            self.connection.close()

    def writes(self):
        return self.calls.count("_insert")


class _PoolConnection:
    """What C{runWithConnection} hands over: adbapi's C{Connection} wrapper."""

    def __init__(self, pool):
        self._pool = pool

    def cursor(self):
        return self._pool.connection.cursor()

    def commit(self):
        self._pool.connection.commit()

    def rollback(self):
        self._pool.connection.rollback()

    def reconnect(self):
        self._pool.connection.close()
        self._pool.connection = None
        self._pool.connect()


class _Counting:
    """A cursor that notes each row it hands out."""

    def __init__(self, cursor, fetched):
        self._cursor = cursor
        self._fetched = fetched

    def execute(self, *args):
        return self._cursor.execute(*args)

    def fetchone(self):
        row = self._cursor.fetchone()
        if row is not None:
            self._fetched.append(row)
        return row


class _StoreHarness(SynchronousTestCase):
    """A prepared file, a clock, a store on a L{SyncPool}."""

    def setUp(self):
        base = temp_dir(self)
        self.path = os.path.join(base, "history.sqlite3")
        prepare(self.path)
        self.clock = task.Clock()
        self.pools: list[SyncPool] = []

    def make_store(self, **kwargs) -> SQLiteHistory:
        store = SQLiteHistory(self.path, self.clock, pool_factory=self.pool_factory, **kwargs)
        self.successResultOf(store.start())
        self.addCleanup(self.close, store)
        return store

    def pool_factory(self, *args, **kwargs):
        pool = SyncPool(*args, **kwargs)
        self.pools.append(pool)
        return pool

    def close(self, store):
        for pool in self.pools:
            pool.hold = False
            pool.failing = False
            pool.release()
        d = store.stop()
        self.clock.advance(0)
        self.successResultOf(d)
        for pool in self.pools:
            if not pool.closed:
                pool.close()

    @property
    def pool(self) -> SyncPool:
        return self.pools[-1]

    def turn(self):
        """Let the next write come: the end of the turn, or WRITE_INTERVAL after the last
        write started (the clock stands still otherwise)."""
        self.clock.advance(history.WRITE_INTERVAL)


class PrepareTests(SynchronousTestCase):
    """L{prepare}: create, check, migrate; refuse what is not ours and leave it alone."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "history.sqlite3")

    def version(self):
        return rows(self.path, f"SELECT version FROM {history.SCHEMA_TABLE}")

    def assertRefusedUntouched(self, *words):
        before = snapshot(self.path)
        error = self.assertRaises(HistoryFileError, prepare, self.path)
        message = str(error)
        self.assertIn(self.path, message)
        self.assertIn("left untouched", message)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)
        self.assertEqual(snapshot(self.path), before)
        return message

    def test_new_file_created(self):
        self.assertEqual(prepare(self.path), 0)
        self.assertEqual(self.version(), [(history.SCHEMA_VERSION,)])
        self.assertEqual(rows(self.path, "PRAGMA journal_mode"), [("wal",)])
        self.assertEqual(rows(self.path, "SELECT count(*) FROM chunks"), [(0,)])

    def test_empty_file_becomes_new_history(self):
        open(self.path, "wb").close()
        self.assertEqual(prepare(self.path), 0)
        self.assertEqual(self.version(), [(history.SCHEMA_VERSION,)])

    def test_reopen_keeps_data_and_returns_newest_id(self):
        prepare(self.path)
        write(self.path, [said(7), said(9, room="#Dev")])
        self.assertEqual(prepare(self.path), 9)
        self.assertEqual(ids(self.path), [7, 9])

    def test_text_file_refused(self):
        with open(self.path, "w") as handle:
            handle.write("these are my notes, not a database\n" * 10)
        self.assertRefusedUntouched("not a chatroom history database")

    def test_unrelated_sqlite_database_refused(self):
        connection = sqlite3.connect(self.path)
        connection.execute("CREATE TABLE recipes (name TEXT)")
        connection.execute("INSERT INTO recipes VALUES ('soup')")
        connection.commit()
        connection.close()
        self.assertRefusedUntouched("not a chatroom history database")

    def test_database_with_only_a_view_refused(self):
        """No table, but not empty either (a view): somebody else's, not a new history."""
        connection = sqlite3.connect(self.path)
        connection.execute("CREATE VIEW answer AS SELECT 42")
        connection.commit()
        connection.close()
        self.assertRefusedUntouched("not a chatroom history database")

    def test_unrelated_wal_database_refused_without_wal_files(self):
        """Even a WAL-mode file gets no -wal or -shm beside it from the check."""
        connection = sqlite3.connect(self.path)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE recipes (name TEXT)")
        connection.commit()
        connection.close()
        self.assertEqual(os.listdir(self.dir), ["history.sqlite3"])
        self.assertRefusedUntouched("not a chatroom history database")
        self.assertEqual(os.listdir(self.dir), ["history.sqlite3"])

    def fill(self, count=5000):
        prepare(self.path)
        write(self.path, (said(i, text="x" * 100) for i in range(1, count + 1)), per_chunk=10)
        self.assertEqual(sorted(os.listdir(self.dir)), ["history.sqlite3"])

    def test_truncated_database_refused(self):
        self.fill()
        with open(self.path, "rb") as handle:
            data = handle.read()
        with open(self.path, "wb") as handle:
            handle.write(data[: len(data) // 2])
        self.assertRefusedUntouched("corrupt")
        self.assertEqual(os.listdir(self.dir), ["history.sqlite3"])

    def test_truncated_header_refused(self):
        self.fill(10)
        with open(self.path, "rb") as handle:
            data = handle.read()
        with open(self.path, "wb") as handle:
            handle.write(data[:60])
        self.assertRefusedUntouched("not an SQLite file")

    def test_damaged_page_refused(self):
        self.fill()
        with open(self.path, "r+b") as handle:
            handle.seek(history.PAGE_SIZE * 3)  # the header of a page of chunks
            handle.write(b"\xff" * 300)
        self.assertRefusedUntouched("corrupt")
        self.assertEqual(os.listdir(self.dir), ["history.sqlite3"])

    def test_newer_version_refused(self):
        prepare(self.path)
        connection = sqlite3.connect(self.path)
        connection.execute(
            f"UPDATE {history.SCHEMA_TABLE} SET version = ?", (history.SCHEMA_VERSION + 1,)
        )
        connection.commit()
        connection.close()
        self.assertRefusedUntouched("newer", str(history.SCHEMA_VERSION + 1))

    def test_directory_refused(self):
        os.mkdir(self.path)
        self.assertRaises(HistoryFileError, prepare, self.path)

    def test_missing_directory_refused(self):
        error = self.assertRaises(
            HistoryFileError, prepare, os.path.join(self.dir, "nowhere", "h.sqlite3")
        )
        self.assertIn("cannot be created", str(error))

    def test_new_file_has_large_pages(self):
        """A new history uses PAGE_SIZE pages, so a chunk row fits in one page."""
        prepare(self.path)
        self.assertEqual(rows(self.path, "PRAGMA page_size"), [(history.PAGE_SIZE,)])
        self.assertEqual(history.PAGE_SIZE, 32768)

    def test_migration_from_version_0(self):
        """A file marked version 0 (the mark and nothing else) gets every migration."""
        connection = sqlite3.connect(self.path)
        connection.execute(f"CREATE TABLE {history.SCHEMA_TABLE} (version INTEGER NOT NULL)")
        connection.execute(f"INSERT INTO {history.SCHEMA_TABLE} VALUES (0)")
        connection.commit()
        connection.close()
        self.assertEqual(prepare(self.path), 0)
        self.assertEqual(self.version(), [(history.SCHEMA_VERSION,)])
        self.assertEqual(rows(self.path, "SELECT count(*) FROM chunks"), [(0,)])

    def test_migration_from_version_1_adds_the_time_index(self):
        """A file written by the first release (version 1) gets the prune's index; rows stay."""
        current = history.MIGRATIONS
        self.patch(history, "MIGRATIONS", current[:1])
        self.fill(3)
        self.assertEqual(self.version(), [(1,)])
        self.patch(history, "MIGRATIONS", current)
        self.assertEqual(prepare(self.path), 3)
        self.assertEqual(self.version(), [(2,)])
        self.assertIn(("chunks_time",), rows(self.path, "SELECT name FROM sqlite_master"
                                                        " WHERE type = 'index'"))
        self.assertEqual(ids(self.path), [1, 2, 3])

    def test_migration_from_older_version_keeps_rows(self):
        """A current file meets code that knows one more version: the step runs once, rows
        stay."""
        self.fill(3)
        newer = history.SCHEMA_VERSION + 1
        self.patch(
            history,
            "MIGRATIONS",
            history.MIGRATIONS
            + (("ALTER TABLE chunks ADD COLUMN edited INTEGER NOT NULL DEFAULT 0",),),
        )
        self.assertEqual(prepare(self.path), 3)
        self.assertEqual(self.version(), [(newer,)])
        self.assertEqual(rows(self.path, "SELECT DISTINCT edited FROM chunks"), [(0,)])
        self.assertEqual(ids(self.path), [1, 2, 3])
        self.assertEqual(prepare(self.path), 3)  # already current: nothing re-applied
        self.assertEqual(self.version(), [(newer,)])

    def test_failed_migration_changes_nothing(self):
        self.fill(3)
        current = history.MIGRATIONS
        self.patch(
            history, "MIGRATIONS", current + (("ALTER TABLE nosuch ADD COLUMN x",),)
        )
        self.assertRaises(HistoryFileError, prepare, self.path)
        self.patch(history, "MIGRATIONS", current)
        self.assertEqual(self.version(), [(history.SCHEMA_VERSION,)])
        self.assertEqual(prepare(self.path), 3)

    def test_prune_uses_the_time_index(self):
        """The hourly prune finds old chunks through the index, not by reading every row."""
        prepare(self.path)
        inner = history._DELETE_OLDER.split("IN (", 1)[1].rstrip(")")
        plan = rows(self.path, "EXPLAIN QUERY PLAN " + inner.replace("?", "0"))
        details = " ".join(row[-1] for row in plan)
        self.assertIn("INDEX chunks_time (last_time<?)", details)

    def test_replay_query_uses_the_room_index(self):
        """Newest chunks of one room first, straight from the index: no scan, no sort."""
        prepare(self.path)
        plan = rows(
            self.path,
            "EXPLAIN QUERY PLAN " + history._RECENT.replace("?", "'x'", 1).replace("?", "20"),
        )
        details = " ".join(row[-1] for row in plan)
        self.assertIn("USING INDEX chunks_room (room_key=?)", details)
        self.assertNotIn("TEMP B-TREE", details)
        self.assertNotIn("SCAN chunks", details.replace("SCAN chunks USING INDEX", ""))


class WriteTests(_StoreHarness):
    """Records are buffered and written one transaction per turn, one at a time."""

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(IHistoryStore, self.make_store()))

    def test_pool_is_one_wal_connection(self):
        self.make_store()
        self.assertEqual(self.pool.kwargs["cp_min"], 1)
        self.assertEqual(self.pool.kwargs["cp_max"], 1)
        self.assertFalse(self.pool.kwargs["check_same_thread"])
        self.assertTrue(self.pool.started)
        self.assertEqual(self.pool.connection.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    def test_record_never_writes_in_the_same_turn(self):
        store = self.make_store()
        store.record(said(1))
        self.assertEqual(self.pool.writes(), 0)
        self.turn()
        self.assertEqual(self.pool.writes(), 1)
        self.assertEqual(stored_events(self.path), [said(1)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_transaction_per_turn(self):
        store = self.make_store()
        store.record_turn(tuple(said(i) for i in range(1, 501)))
        self.turn()
        self.assertEqual(self.pool.writes(), 1)
        self.assertEqual(ids(self.path), list(range(1, 501)))
        # One chunk per room, cut at CHUNK_EVENTS.
        self.assertEqual(rows(self.path), [("#lobby", 1, 256, 256), ("#lobby", 257, 500, 244)])

    def test_writes_are_write_interval_apart_under_load(self):
        """After a quiet spell a record is written at the end of its turn; while records keep
        coming, writes start at most once per WRITE_INTERVAL, each taking all that came."""
        store = self.make_store()
        self.clock.advance(10)  # quiet since the probe at start
        before = self.pool.writes()
        store.record(said(1))
        self.clock.advance(0)
        self.assertEqual(self.pool.writes(), before + 1)
        self.clock.advance(history.WRITE_INTERVAL / 5)
        store.record(said(2))
        self.clock.advance(0)
        store.record(said(3))
        self.clock.advance(history.WRITE_INTERVAL / 2)
        self.assertEqual(self.pool.writes(), before + 1)
        self.clock.advance(history.WRITE_INTERVAL)
        self.assertEqual(self.pool.writes(), before + 2)
        self.assertEqual(ids(self.path), [1, 2, 3])

    def test_record_turn_packs_a_turn_at_once(self):
        """The hub hands a turn over in one call, packed at once into a row per room; past
        the buffer bound the oldest turns' rows go (never the newest), counted as lost."""
        store = self.make_store(max_buffered=3)
        self.pool.hold = True
        store.record(said(1))
        self.turn()  # 1 in flight, held
        with capturedLogs() as logs:
            for turn in range(3):
                store.record_turn((said(2 + 2 * turn), said(3 + 2 * turn)))
        self.assertEqual([e.get("lost") for e in logs if "lost" in e], [2])  # logged once
        with capturedLogs() as logs:
            self.pool.hold = False
            self.pool.release()
            self.turn()
        self.assertEqual([e.get("lost") for e in logs if "lost" in e], [4])  # the recovery
        self.assertEqual(ids(self.path), [1, 6, 7])
        self.assertEqual(rows(self.path), [("#lobby", 1, 1, 1), ("#lobby", 6, 7, 2)])

    def test_one_transaction_in_flight(self):
        store = self.make_store()
        self.pool.hold = True
        store.record(said(1))
        self.turn()
        store.record_turn((said(2), said(3)))
        self.turn()
        self.turn()
        self.assertEqual(self.pool.writes(), 1)  # 2 and 3 wait for the first
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pool.hold = False
        self.pool.release()
        self.assertEqual(self.pool.writes(), 1)  # the next write waits for the next turn
        self.turn()
        self.assertEqual(self.pool.writes(), 2)
        self.assertEqual(ids(self.path), [1, 2, 3])
        self.assertEqual(rows(self.path), [("#lobby", 1, 1, 1), ("#lobby", 2, 3, 2)])

    def test_every_kind_stored_renames_and_quits_per_room(self):
        store = self.make_store()
        store.record_turn((
            Joined(1, T0, "#Dev", "alice", "tcp"),
            Said(2, T0, "#Dev", "alice", "hi"),
            Emote(3, T0, "#Dev", "alice", "waves"),
            TopicChanged(4, T0, "#Dev", "alice", "plans"),
            Parted(5, T0, "#Dev", "alice", "lunch"),
            Renamed(6, T0, ("#lobby", "#Dev"), "alice", "alicia"),
            Left(7, T0, ("#lobby", "#Ops"), "alicia", "bye"),
            Private(8, T0, "alicia", "bob", "secret"),  # never handed over; not stored anyway
        ))
        self.turn()
        self.assertEqual(
            stored_events(self.path),
            [
                Joined(1, T0, "#Dev", "alice", "tcp"),
                Said(2, T0, "#Dev", "alice", "hi"),
                Emote(3, T0, "#Dev", "alice", "waves"),
                TopicChanged(4, T0, "#Dev", "alice", "plans"),
                Parted(5, T0, "#Dev", "alice", "lunch"),
                Renamed(6, T0, ("#Dev",), "alice", "alicia"),
                Renamed(6, T0, ("#lobby",), "alice", "alicia"),
                Left(7, T0, ("#lobby",), "alicia", "bye"),
                Left(7, T0, ("#Ops",), "alicia", "bye"),
            ],
        )
        self.assertEqual(
            rows(self.path), [("#dev", 1, 6, 2), ("#lobby", 6, 7, 0), ("#ops", 7, 7, 0)]
        )
        self.assertNotIn("secret", repr(rows(self.path, "SELECT * FROM chunks")))

    def test_one_row_per_room_per_turn(self):
        """A turn with lines in two rooms is two rows, each with its room's lines in order."""
        store = self.make_store()
        store.record_turn(tuple(said(i, room="#Dev" if i % 3 else "#lobby") for i in range(1, 7))
                          + (Joined(7, T0, "#dev", "bob", "udp"),))
        self.turn()
        self.assertEqual(self.pool.writes(), 1)
        self.assertEqual(rows(self.path), [("#dev", 1, 7, 4), ("#lobby", 3, 6, 2)])
        self.assertEqual(
            [(event.id, event.room) for event in stored_events(self.path)],
            [(1, "#Dev"), (2, "#Dev"), (3, "#lobby"), (4, "#Dev"), (5, "#Dev"), (6, "#lobby"),
             (7, "#dev")],
        )

    def test_rename_and_quit_land_in_each_room(self):
        """A rename across two rooms goes into both rooms' chunks, same id; so does a quit."""
        store = self.make_store()
        store.record(said(1, room="#a"))
        store.record(said(2, room="#b"))
        self.turn()
        store.record(Renamed(3, T0 + 3, ("#A", "#b"), "alice", "alicia"))
        self.turn()
        store.record(Left(4, T0 + 4, ("#a", "#b", "#c"), "alicia", "bye"))
        self.turn()
        self.assertEqual(
            rows(self.path)[2:],
            [("#a", 3, 3, 0), ("#b", 3, 3, 0), ("#a", 4, 4, 0), ("#b", 4, 4, 0), ("#c", 4, 4, 0)],
        )
        self.assertEqual(
            stored_events(self.path)[2:],
            [
                Renamed(3, T0 + 3, ("#A",), "alice", "alicia"),
                Renamed(3, T0 + 3, ("#b",), "alice", "alicia"),
                Left(4, T0 + 4, ("#a",), "alicia", "bye"),
                Left(4, T0 + 4, ("#b",), "alicia", "bye"),
                Left(4, T0 + 4, ("#c",), "alicia", "bye"),
            ],
        )

    def test_separators_in_a_field_are_removed(self):
        """The session never lets C0 controls through, but a stray separator must not
        split an event or shift its neighbours: it is dropped from its field."""
        store = self.make_store()
        store.record(said(1, text="before"))
        store.record(Said(2, T0, "#lobby", "ali\x1ece", "a\x1fb\x1ec"))
        store.record(Parted(3, T0, "#lobby", "bob", "x\x1f\x1f"))
        store.record(said(4, text="after"))
        self.turn()
        self.assertEqual(
            stored_events(self.path),
            [
                said(1, text="before"),
                Said(2, T0, "#lobby", "alice", "abc"),
                Parted(3, T0, "#lobby", "bob", "x"),
                said(4, text="after"),
            ],
        )

    def test_stored_events_round_trip(self):
        """Every kind, odd times and text come back as they went in, read-only."""
        store = self.make_store()
        events = [
            Joined(10**18, 1234.5678901234, "#Dev", "alice", "tcp"),
            Said(10**18 + 1, T0 + 0.1, "#Dev", "alice", "héllo ☃ — 🎉"),
            Emote(10**18 + 2, T0 + 0.2, "#lobby", "bob", ""),
            TopicChanged(10**18 + 3, T0 + 1e-6, "#Dev", "bob", ""),
            Parted(10**18 + 4, T0 + 3, "#Dev", "bob", "lunch, back at 2"),
        ]
        for event in events:
            store.record(event)
        self.turn()
        self.close(store)
        before = snapshot(self.path)
        self.assertEqual(stored_events(self.path), events)
        self.assertEqual(snapshot(self.path), before)

    def test_stored_events_never_creates_a_file(self):
        missing = os.path.join(os.path.dirname(self.path), "missing.sqlite3")
        self.assertRaises(sqlite3.OperationalError, stored_events, missing)
        self.assertFalse(os.path.exists(missing))


class RecentTests(_StoreHarness):
    """The replay query: filtering, order, and records not yet written."""

    def test_filters_room_before_limit_and_kind_oldest_first(self):
        store = self.make_store()
        store.record(Joined(1, T0, "#Dev", "bob", "tcp"))
        for i in range(2, 12):
            store.record(said(i, room="#Dev"))
        store.record(said(12, room="#lobby"))
        store.record(Emote(13, T0 + 13, "#Dev", "bob", "nods"))
        store.record(TopicChanged(14, T0, "#Dev", "bob", "t"))
        store.record(said(15, room="#Dev"))
        self.turn()
        got = self.successResultOf(store.recent("#dev", 3, 15))
        self.assertEqual(
            got,
            [
                said(10, room="#Dev"),
                said(11, room="#Dev"),
                Emote(13, T0 + 13, "#Dev", "bob", "nods"),
            ],
        )
        self.assertEqual([e.id for e in self.successResultOf(store.recent("#dev", 100, 4))], [2, 3])
        self.assertEqual(self.successResultOf(store.recent("#dev", 0, 100)), [])
        self.assertEqual(self.successResultOf(store.recent("#nowhere", 5, 100)), [])

    def test_room_key_is_folded(self):
        store = self.make_store()
        store.record(said(1, room="#DeV"))
        self.turn()
        self.assertEqual(self.successResultOf(store.recent("#dev", 5, 2)), [said(1, room="#DeV")])
        self.assertEqual(self.successResultOf(store.recent("#DEV", 5, 2)), [said(1, room="#DeV")])

    def test_spans_several_chunks(self):
        """Lines written over several turns, with chunks of joins alone between them."""
        store = self.make_store()
        next_id = 1
        for turn in range(5):
            store.record(Joined(next_id, T0, "#lobby", f"u{turn}", "tcp"))
            next_id += 1
            self.turn()
            lines = []
            for _ in range(3):
                lines += [said(next_id), said(next_id + 1, room="#other")]
                next_id += 2
            store.record_turn(tuple(lines))
            self.turn()
        self.assertEqual(len(rows(self.path)), 15)  # per turn: a join chunk, two line chunks
        lobby = [
            event
            for event in stored_events(self.path)
            if type(event) is Said and event.room == "#lobby"
        ]
        self.assertEqual(len(lobby), 15)
        self.assertEqual(self.successResultOf(store.recent("#lobby", 7, 1000)), lobby[-7:])
        self.assertEqual(self.successResultOf(store.recent("#lobby", 100, 1000)), lobby)

    def test_before_in_the_middle_of_a_chunk(self):
        store = self.make_store()
        store.record_turn(tuple(said(i) for i in range(1, 11)))
        self.turn()
        store.record_turn(tuple(said(i) for i in range(11, 21)))
        self.turn()
        self.assertEqual(rows(self.path), [("#lobby", 1, 10, 10), ("#lobby", 11, 20, 10)])
        for before, expected in ((15, [11, 12, 13, 14]), (13, [9, 10, 11, 12]), (3, [1, 2])):
            got = self.successResultOf(store.recent("#lobby", 4, before))
            self.assertEqual(got, [said(i) for i in expected])
        self.assertEqual(self.successResultOf(store.recent("#lobby", 4, 1)), [])

    def test_reads_only_the_chunks_it_needs(self):
        """The newest chunks first, and one more to know that no other line is newer."""
        prepare(self.path)
        for turn in range(50):
            write(self.path, [said(turn * 10 + i) for i in range(1, 11)])
        store = self.make_store()
        fetched: list = []
        select = history._select_recent
        self.patch(
            history,
            "_select_recent",
            lambda txn, *args: select(_Counting(txn, fetched), *args),
        )
        got = self.successResultOf(store.recent("#lobby", 15, 10_000))
        self.assertEqual([e.id for e in got], list(range(486, 501)))
        self.assertEqual([row[1] for row in fetched], [500, 490, 480])

    def test_overlapping_chunks_still_answer_right(self):
        """Chunks of one room never overlap as the store writes them; if some did
        (a file written by other means), the answer would still be the newest lines."""
        write(self.path, [said(1), said(2), said(9), said(10)])
        write(self.path, [said(3), said(4)])
        write(self.path, [said(5), said(6), said(7)])
        store = self.make_store()
        for limit, before, expected in ((3, 100, [7, 9, 10]), (5, 100, [5, 6, 7, 9, 10]),
                                        (3, 9, [5, 6, 7]), (8, 100, [2, 3, 4, 5, 6, 7, 9, 10])):
            got = self.successResultOf(store.recent("#lobby", limit, before))
            self.assertEqual([e.id for e in got], expected)

    def test_includes_buffered_and_in_flight_without_duplicates(self):
        store = self.make_store()
        store.record(said(1))
        self.turn()  # 1 written
        self.pool.hold = True
        store.record(said(2))
        self.turn()  # 2 in flight
        store.record(said(3))  # 3 buffered
        d = store.recent("#lobby", 10, 100)  # queued behind the write of 2
        self.assertNoResult(d)
        self.pool.hold = False
        self.pool.release()  # 2 committed, then the query runs
        self.assertEqual([e.id for e in self.successResultOf(d)], [1, 2, 3])
        self.turn()
        self.assertEqual(
            [e.id for e in self.successResultOf(store.recent("#lobby", 10, 100))], [1, 2, 3]
        )

    def test_buffered_record_committed_before_the_query_is_not_doubled(self):
        """Even if the pool answers a write after the query it ran later, ids dedupe."""
        store = self.make_store()
        store.record(said(1))
        self.turn()
        self.pool.hold = True
        store.record(said(2))
        self.turn()
        d = store.recent("#lobby", 10, 100)
        write, query = self.pool.held
        self.pool.held = []
        self.pool.hold = False
        # Commit the write first but fire its Deferred only after the query answered.
        result = self.pool._run(*write[1:])
        self.pool._run(*query[1:]).chainDeferred(query[0])
        result.chainDeferred(write[0])
        self.assertEqual([e.id for e in self.successResultOf(d)], [1, 2])

    def test_unwritten_records_filtered_like_written_ones(self):
        store = self.make_store()
        self.pool.hold = True
        store.record(said(1, room="#a"))
        store.record(said(2, room="#B"))
        store.record(Joined(3, T0, "#b", "x", "udp"))
        store.record(said(4, room="#b"))
        d = store.recent("#b", 1, 4)
        self.pool.release()
        self.assertEqual(self.successResultOf(d), [said(2, room="#B")])

    def test_values_survive_a_restart(self):
        store = self.make_store()
        originals = [said(1, text="héllo ☃"), Emote(2, 1234.5678901234, "#lobby", "bob", "smiles")]
        for event in originals:
            store.record(event)
        self.turn()
        self.close(store)
        self.assertEqual(prepare(self.path), 2)
        again = self.make_store()
        self.assertEqual(self.successResultOf(again.recent("#lobby", 20, 3)), originals)

    def test_newest_id_counts_unwritten_records(self):
        store = self.make_store()
        self.assertEqual(self.successResultOf(store.newest_id()), 0)
        store.record(said(5))
        self.turn()
        store.record(said(9))
        self.assertEqual(self.successResultOf(store.newest_id()), 9)


class AfterTests(_StoreHarness):
    """What a returning client missed: the first lines after an id, across chunks and the buffer."""

    def fill(self, store):
        """Lines 1..40 of #lobby over four turns (chunks), a join and #other between them."""
        next_id = 1
        for _ in range(4):
            lines = []
            for _ in range(10):
                lines += [said(next_id), said(next_id + 1, room="#other")]
                next_id += 2
            store.record_turn(tuple(lines))
            store.record(Joined(next_id, T0, "#lobby", "bob", "tcp"))
            next_id += 1
            self.turn()
        return [e for e in stored_events(self.path) if type(e) is Said and e.room == "#lobby"]

    def test_first_lines_after_an_id_oldest_first_across_chunks(self):
        store = self.make_store()
        lobby = self.fill(store)
        got = self.successResultOf(store.recent("#lobby", 12, 10_000, after=lobby[5].id))
        self.assertEqual(got, lobby[6:18])
        everything = self.successResultOf(store.recent("#lobby", 1000, 10_000, after=0))
        self.assertEqual(everything, lobby)

    def test_paging_on_from_the_last_id_leaves_no_gap_and_no_repeat(self):
        store = self.make_store()
        lobby = self.fill(store)
        seen, last = [], 0
        while True:
            page = self.successResultOf(store.recent("#lobby", 7, 10_000, after=last))
            if not page:
                break
            seen += page
            last = page[-1].id
        self.assertEqual(seen, lobby)

    def test_bounded_above_by_before(self):
        store = self.make_store()
        lobby = self.fill(store)
        got = self.successResultOf(store.recent("#lobby", 100, lobby[10].id, after=lobby[7].id))
        self.assertEqual(got, lobby[8:10])

    def test_lines_not_written_yet_are_included_once(self):
        store = self.make_store()
        lobby = self.fill(store)
        store.record(said(500))
        store.record(said(501, room="#other"))
        store.record(said(502))
        got = self.successResultOf(store.recent("#lobby", 100, 10_000, after=lobby[-1].id))
        self.assertEqual(got, [said(500), said(502)])
        got = self.successResultOf(store.recent("#lobby", 2, 10_000, after=lobby[-2].id))
        self.assertEqual(got, [lobby[-1], said(500)])


class ReadBoundTests(_StoreHarness):
    """At most MAX_READS queries wait on the one connection; more are refused at once."""

    def test_queries_past_the_bound_are_refused_then_accepted_again(self):
        store = self.make_store()
        store.record(said(1))
        self.turn()
        self.pool.hold = True
        waiting = [store.recent("#lobby", 5, 99) for _ in range(MAX_READS)]
        with capturedLogs() as logs:
            refused = store.recent("#lobby", 5, 99)
        failure = self.failureResultOf(refused, Unavailable)
        self.assertEqual(str(failure.value), "the history is busy; try again in a moment")
        self.assertEqual([event["log_level"].name for event in logs], ["warn"])
        self.assertEqual(len(self.pool.held), MAX_READS)
        self.pool.hold = False
        self.pool.release()
        for d in waiting:
            self.assertEqual([e.id for e in self.successResultOf(d)], [1])
        self.assertEqual([e.id for e in self.successResultOf(store.recent("#lobby", 5, 99))], [1])


class PruneTests(_StoreHarness):
    """Retention: rows older than C{retention_days} go; 0 keeps everything."""

    def fill(self, store):
        """One write each, so one chunk each (the quit: one per room)."""
        for age_days in (40, 31, 29, 1):
            store.record(said(int(age_days), time=T0 - age_days * DAY))
            self.turn()
        store.record(Left(50, T0 - 35 * DAY, ("#a", "#b"), "x", ""))
        self.turn()

    def test_prune_by_retention(self):
        store = self.make_store(retention_days=30)
        self.fill(store)
        self.assertEqual(self.successResultOf(store.prune(T0)), 4)
        self.assertEqual(ids(self.path), [1, 29])

    def test_a_chunk_goes_with_its_newest_event(self):
        """A chunk spans one turn: it stays while its newest event is kept."""
        store = self.make_store(retention_days=30)
        store.record_turn((said(1, time=T0 - 31 * DAY), said(2, time=T0 - 29 * DAY),
                           said(3, room="#dev", time=T0 - 31 * DAY)))
        self.turn()
        self.assertEqual(self.successResultOf(store.prune(T0)), 1)
        self.assertEqual(ids(self.path), [1, 2])

    def test_prune_in_chunks(self):
        self.patch(history, "PRUNE_CHUNK", 2)
        store = self.make_store(retention_days=30)
        self.fill(store)
        self.assertEqual(self.successResultOf(store.prune(T0)), 4)
        self.assertEqual(self.pool.calls.count("_delete_older"), 3)

    def test_zero_retention_keeps_everything(self):
        store = self.make_store(retention_days=0)
        self.fill(store)
        self.assertEqual(self.successResultOf(store.prune(T0 + 1000 * DAY)), 0)
        self.assertEqual(len(stored_events(self.path)), 6)
        self.assertNotIn("_delete_older", self.pool.calls)


class FailureTests(_StoreHarness):
    """A failing store: chat goes on, one error line with a count, one recovery line."""

    def history_logs(self, logs):
        return [
            event
            for event in logs
            if event.get("log_namespace", "").startswith("chatservice.backends.history")
        ]

    def test_failure_logged_once_with_count_then_recovery(self):
        store = self.make_store()
        with capturedLogs() as logs:
            self.pool.failing = True
            store.record(said(1))
            store.record(said(2))
            self.turn()
            store.record(said(3))
            self.turn()
            store.record(said(4))
            self.turn()
            self.assertEqual(
                [(event["log_level"].name, event["lost"]) for event in self.history_logs(logs)],
                [("error", 2)],
            )
            self.assertEqual(self.history_logs(logs)[0]["problem"], "write failed")
            self.assertIn("disk I/O error", self.history_logs(logs)[0]["error"])
            self.pool.failing = False
            store.record(said(5))
            self.turn()
            store.record(said(6))
            self.turn()
        events = self.history_logs(logs)
        self.assertEqual(
            [(event["log_level"].name, event["lost"]) for event in events],
            [("error", 2), ("warn", 4)],
        )
        self.assertEqual(
            events[1]["log_format"], "History store recovered; {lost} records were lost"
        )
        self.assertEqual(ids(self.path), [5, 6])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_second_spell_is_logged_again(self):
        store = self.make_store()
        with capturedLogs() as logs:
            for id_, failing in enumerate((True, False, True, False), start=1):
                self.pool.failing = failing
                store.record(said(id_))
                self.turn()
        self.assertEqual(
            [(event["log_level"].name, event["lost"]) for event in self.history_logs(logs)],
            [("error", 1), ("warn", 1), ("error", 1), ("warn", 1)],
        )

    def test_failed_records_leave_the_replay(self):
        store = self.make_store()
        self.pool.failing = True
        store.record(said(1))
        self.turn()
        self.pool.failing = False
        self.assertEqual(self.successResultOf(store.recent("#lobby", 10, 10)), [])

    def test_buffer_bound_drops_oldest_and_counts_them(self):
        store = self.make_store(max_buffered=3)
        self.pool.hold = True
        store.record(said(1))
        self.turn()  # 1 in flight, hung
        with capturedLogs() as logs:
            for i in range(2, 8):
                store.record(said(i))
            self.pool.hold = False
            self.pool.release()
            self.turn()
        events = self.history_logs(logs)
        self.assertEqual(
            [(event["log_level"].name, event["lost"]) for event in events],
            [("error", 1), ("warn", 3)],
        )
        self.assertEqual(events[0]["problem"], "buffer full")
        self.assertEqual(ids(self.path), [1, 5, 6, 7])

    def remove_file(self):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)

    def test_removed_file_is_noticed_and_history_goes_on_in_a_new_one(self):
        """The file and its WAL deleted under the open connection, which SQLite does not
        notice (writes would go on into the unlinked file, lost without a word): the next
        write sees it, logs it, and writes to a new history file at the same path."""
        store = self.make_store()
        store.record(said(1))
        self.turn()
        self.remove_file()
        with capturedLogs() as logs:
            store.record(said(2))
            self.turn()
        [event] = self.history_logs(logs)
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("was removed or replaced", event["log_format"])
        self.assertEqual(ids(self.path), [2])
        self.assertEqual([e.id for e in self.successResultOf(store.recent("#lobby", 5, 99))], [2])

    def test_folder_gone_counts_lost_records_then_recovers(self):
        """No file can be made (its folder is gone): the records are lost, logged once with
        the count; once the folder is back, the next write makes the file and logs recovery."""
        store = self.make_store()
        store.record(said(1))
        self.turn()
        self.remove_file()
        folder = os.path.dirname(self.path)
        os.rmdir(folder)
        with capturedLogs() as logs:
            store.record(said(2))
            self.turn()
            store.record(said(3))
            store.record(said(4))
            self.turn()
            os.mkdir(folder)
            store.record(said(5))
            self.turn()
        events = self.history_logs(logs)
        self.assertEqual(
            [(event["log_level"].name, event.get("lost")) for event in events],
            [("error", 1), ("warn", None), ("warn", 3)],
        )
        self.assertIn("cannot be created", events[0]["error"])
        self.assertEqual(ids(self.path), [5])

    def test_start_failure_is_logged_not_raised(self):
        """The file vanished between prepare() and start(): logged once, and start() still succeeds."""
        os.remove(self.path)
        store = SQLiteHistory(self.path, self.clock, self.pool_factory)
        with capturedLogs() as logs:
            self.successResultOf(store.start())
            store.record(said(1))
            self.turn()
        events = self.history_logs(logs)
        self.assertEqual(
            [(event.get("problem"), event.get("lost")) for event in events][-1:],
            [("cannot open", 0)],
        )
        self.assertEqual(len([event for event in events if "problem" in event]), 1)
        self.assertFalse(
            os.path.exists(self.path)
        )  # never created afresh behind the operator's back
        self.successResultOf(store.stop())


class StopTests(_StoreHarness):
    """stop(): flush what is buffered, wait for what is in flight, close."""

    def test_stop_flushes_buffered_records_and_closes(self):
        store = self.make_store()
        store.record(said(1))
        store.record(said(2))
        d = store.stop()
        self.successResultOf(d)
        self.assertEqual(ids(self.path), [1, 2])
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_waits_for_the_write_in_flight_then_writes_the_rest(self):
        store = self.make_store()
        self.pool.hold = True
        store.record(said(1))
        self.turn()
        store.record(said(2))
        d = store.stop()
        self.assertNoResult(d)
        self.assertFalse(self.pool.closed)
        self.pool.hold = False
        self.pool.release()
        self.successResultOf(d)
        self.assertEqual(ids(self.path), [1, 2])
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_waits_for_queries_too(self):
        store = self.make_store()
        self.pool.hold = True
        query = store.recent("#lobby", 5, 10)
        d = store.stop()
        self.assertNoResult(d)
        self.pool.hold = False
        self.pool.release()
        self.assertEqual(self.successResultOf(query), [])
        self.successResultOf(d)
        self.assertTrue(self.pool.closed)

    def test_stop_gives_up_after_the_grace(self):
        store = self.make_store()
        self.pool.hold = True
        store.record(said(1))
        self.turn()
        with capturedLogs() as logs:
            d = store.stop()
            self.clock.advance(history.STOP_GRACE)
        self.successResultOf(d)
        self.assertFalse(self.pool.closed)  # closing would join the busy thread
        self.assertEqual([event["waiting"] for event in logs if "waiting" in event], [1])
        self.pool.hold = False
        self.pool.release()

    def test_record_after_stop_is_counted_lost(self):
        store = self.make_store()
        self.successResultOf(store.stop())
        with capturedLogs() as logs:
            store.record(said(1))
        self.assertEqual(
            [(event["problem"], event["lost"]) for event in logs if "lost" in event],
            [("stopped", 1)],
        )
        self.failureResultOf(store.recent("#lobby", 5, 10), RuntimeError)

    def test_stop_twice_is_one_stop(self):
        store = self.make_store()
        self.assertIs(store.stop(), store.stop())


class HistoryServiceTests(_StoreHarness):
    """The service starts the store, prunes it at start and then hourly, and stops it."""

    def test_start_prunes_now_and_every_interval(self):
        store = SQLiteHistory(
            self.path, self.clock, pool_factory=self.pool_factory, retention_days=1
        )
        service = HistoryService(store, self.clock)
        self.clock.advance(T0)
        service.startService()
        self.assertTrue(self.pool.started)
        self.assertEqual(self.pool.calls.count("_delete_older"), 1)
        store.record(said(1, time=T0))
        self.turn()
        self.clock.advance(history.PRUNE_INTERVAL - 1)
        self.assertEqual(self.pool.calls.count("_delete_older"), 1)
        self.clock.advance(1)
        self.assertEqual(self.pool.calls.count("_delete_older"), 2)
        self.assertEqual(ids(self.path), [1])
        self.clock.advance(history.PRUNE_INTERVAL * 24)
        self.assertEqual(stored_events(self.path), [])
        self.successResultOf(service.stopService())
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_prune_failure_logged_and_loop_goes_on(self):
        store = SQLiteHistory(
            self.path, self.clock, pool_factory=self.pool_factory, retention_days=1
        )
        service = HistoryService(store, self.clock)
        service.startService()
        with capturedLogs() as logs:
            self.pool.failing = True
            self.clock.advance(history.PRUNE_INTERVAL)
            self.pool.failing = False
        self.assertEqual([event["log_format"] for event in logs], ["History prune failed: {error}"])
        self.clock.advance(history.PRUNE_INTERVAL)
        self.assertEqual(self.pool.calls.count("_delete_older"), 3)
        self.successResultOf(service.stopService())


class RealPoolTests(TestCase):
    """The real adbapi pool, its thread and the real reactor, on a real file."""

    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        base = temp_dir(self)
        self.path = os.path.join(base, "h.sqlite3")
        prepare(self.path)

    @defer.inlineCallbacks
    def test_removed_file_is_noticed_by_the_real_pool(self):
        """With adbapi's own pool and thread: the file removed under a running store, the
        next write makes a new one and the records land there."""
        store = SQLiteHistory(self.path, self.reactor)
        yield store.start().addTimeout(10, self.reactor)
        store.record(said(1))
        # Wait until the first write is committed: the read alone does not order it (it is
        # queued in this turn, the write at its end), and under load it came first.
        deadline = self.reactor.seconds() + 10
        while ids(self.path) != [1]:
            self.assertLess(self.reactor.seconds(), deadline, "said(1) was never written")
            yield task.deferLater(self.reactor, 0.01, lambda: None)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)
        with capturedLogs() as logs:
            store.record(said(2))
            yield store.stop().addTimeout(10, self.reactor)
        self.assertTrue(any("was removed or replaced" in event.get("log_format", "")
                            for event in logs))
        self.assertEqual(ids(self.path), [2])

    @defer.inlineCallbacks
    def test_write_replay_stop_and_restart(self):
        store = SQLiteHistory(self.path, self.reactor)
        yield store.start().addTimeout(10, self.reactor)
        for i in range(1, 101):
            store.record(said(i, room="#Dev" if i % 2 else "#lobby"))
        early = yield store.recent("#dev", 5, 1000).addTimeout(10, self.reactor)
        self.assertEqual([e.id for e in early], [91, 93, 95, 97, 99])
        self.assertEqual((yield store.newest_id().addTimeout(10, self.reactor)), 100)
        store.record(Left(101, T0, ("#Dev", "#lobby"), "alice", "bye"))
        yield store.stop().addTimeout(10, self.reactor)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.path))), ["h.sqlite3"])
        self.assertEqual(prepare(self.path), 101)
        self.assertEqual(len(stored_events(self.path)), 102)

        again = SQLiteHistory(self.path, self.reactor)
        yield again.start().addTimeout(10, self.reactor)
        replay = yield again.recent("#lobby", 3, 101).addTimeout(10, self.reactor)
        self.assertEqual(replay, [said(96), said(98), said(100)])
        yield again.stop().addTimeout(10, self.reactor)
