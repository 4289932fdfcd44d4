# -*- test-case-name: tests.test_history_store -*-
"""
Room history in an SQLite file, written through C{twisted.enterprise.adbapi}.

SQLite is embedded: nothing to install or start, which suits a small install.
The reactor thread never touches the file once the reactor runs: L{prepare}
checks and migrates it synchronously at start, and L{SQLiteHistory} then does
everything through one pooled connection in one worker thread.  Records are
buffered in memory and written at most one transaction per reactor turn, one
transaction at a time, so a burst of chat costs one commit, not one per line;
and a transaction writes one row per room (a chunk packing that room's events
of the batch), not one per event, so a busy room costs a row per turn.
When the store fails (disk full, file gone), chat goes on: the records are
counted as lost, logged once, and the recovery is logged when a write works
again.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
from collections import deque
from pathlib import Path

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatservice.core.events import (
    Emote,
    Joined,
    Left,
    Parted,
    Renamed,
    Said,
    TopicChanged,
)
from chatservice.core.errors import Unavailable
from chatservice.core.interfaces import IHistoryStore
from chatservice.core.names import fold
from chatservice.core.stats import Stats

MAX_BUFFERED = 100_000
"""Records held in memory while waiting to be written.  A store that cannot
keep up (or hangs) costs at most this much memory: past it the oldest records
are dropped and counted as lost."""

PRUNE_INTERVAL = 3600.0
"""Seconds between retention prunes: an hour's worth of old rows is small."""

PRUNE_CHUNK = 10_000
"""Rows deleted per prune transaction, so a first prune of a large backlog
lets the chat's own writes in between instead of holding the file for long."""

MAX_READS = 2000
"""History queries (join replays and C{/history}) waiting or running at once,
service-wide.  They share the one connection with the writes, so a flood of
C{/join}s and C{/history}s could otherwise delay the writes until records are
lost; past the bound a query is refused at once (the user is told the history
is unavailable) instead of queued.  A replay takes well under a millisecond,
so 2,000 is under a second of queries: a class of hundreds joining at once, or
users reconnecting after a restart, all get their replay, and the writes wait
at most that second."""

WRITE_INTERVAL = 0.05
"""Seconds from the start of one write to the start of the next, at least.
A write after a quiet spell goes at the end of its turn; under load, writes
gather 50 ms of records each instead of one turn's: each transaction costs a
thread hand-off, a commit and a WAL append whatever its size, and at a busy
server's rate one per turn cost a tenth of the fan-out's.  Replays merge what
is not written yet, so nobody sees the difference."""

STOP_GRACE = 30.0
"""Seconds L{SQLiteHistory.stop} waits for the last writes before giving up."""

PAGE_SIZE = 32768
"""SQLite page size of a new history file.  A chunk row (a few hundred events,
10 to 20 KiB) fits in one 32 KiB page, where SQLite's default of 4 KiB spread
it over overflow pages: the writes cost half as much CPU (measured 0.22 ->
0.10 us per event for insert and commit), and the replay reads fewer pages."""

SCHEMA_TABLE = "chatroom_schema"
"""The table that marks a file as a chatroom history and holds its version."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the initial schema.  One row per room and write (a "chunk"):
    # the events of that room in one batch, packed into two values (their
    # times, and the rest as text; see "chunks and events" below).  At a busy
    # server's rate a row per event cost about a quarter of the core in the
    # sqlite3 module's bindings and SQLite's inserts alone; a chunk costs one
    # row per room and write (CHUNK_EVENTS events at most).  A rename or a
    # quit concerns several rooms: it goes into each room's chunk, same id.
    # The replay reads the newest chunks of one room, so an index on
    # (room_key, last_id) answers it in a few page reads whatever the size of
    # the file; "lines" (the public lines in the chunk) lets it skip chunks of
    # joins and parts alone.  No other index: each costs every insert;
    # newest_id() runs once at start and scans that index.  (prune() was to
    # find the oldest chunks at the front of the table, but its query could
    # not stop there: version 2 indexes the time.)
    (
        "CREATE TABLE chunks ("
        " room_key TEXT NOT NULL,"
        " room TEXT NOT NULL,"
        " first_id INTEGER NOT NULL,"
        " last_id INTEGER NOT NULL,"
        " last_time REAL NOT NULL,"
        " lines INTEGER NOT NULL,"
        " times BLOB NOT NULL,"
        " data TEXT NOT NULL)",
        "CREATE INDEX chunks_room ON chunks (room_key, last_id)",
    ),
    # 1 -> 2: the hourly prune deletes by time; without an index on it,
    # each prune read the whole table on the one connection the chat's
    # writes and replays wait for.  One more index entry per chunk row.
    ("CREATE INDEX chunks_time ON chunks (last_time)",),
)
"""MIGRATIONS[n] holds the statements that take a file from version n to n+1;
the current version is C{len(MIGRATIONS)}.  Append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes."""

_INSERT = (
    "INSERT INTO chunks (room_key, room, first_id, last_id, last_time, lines, times, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_RECENT = (
    "SELECT first_id, last_id, room, times, data FROM chunks"
    " WHERE room_key = ? AND first_id < ? AND lines > 0"
    " ORDER BY last_id DESC"
)
_AFTER = (
    "SELECT first_id, last_id, room, times, data FROM chunks"
    " WHERE room_key = ? AND last_id > ? AND first_id < ? AND lines > 0"
    " ORDER BY last_id"
)
_NEWEST = "SELECT max(last_id) FROM chunks"
_NO_UPPER_BOUND = 1 << 63


class HistoryFileError(Exception):
    """The history file cannot be used; the message says why, in one line, and
    that the file was left as it was (the service stops rather than harm it)."""


# -- at start, before the reactor runs ----------------------------------------


def prepare(path: str) -> int:
    """
    Make C{path} a usable history file: create it, or check it and bring it to
    the current schema version.  Synchronous: called once, before the reactor
    runs, so a bad file stops the service at start with one clear line.

    A file that is not ours, is corrupt, or was written by a newer version is
    only ever opened read-only (and, when it has no journal beside it,
    immutable, so SQLite creates no -wal or -shm file beside it either).  A
    zero-byte file, or an SQLite file with no tables at all, holds nothing and
    is made a new history.

    @param path: the file's path.
    @return: the newest event id stored, 0 if none, so ids issued after a
        restart stay above it.
    @raise HistoryFileError: the file cannot be used; it was left untouched.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _open_and_migrate(path, create=True)
    except OSError as error:
        raise _refuse(path, f"cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "is not a regular file")
    if info.st_size == 0:
        return _open_and_migrate(path, create=True)
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as error:
        raise _refuse(path, f"cannot be read ({error.strerror})") from None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise _refuse(path, "is not a chatroom history database (not an SQLite file)")
    empty = _validate(path)
    return _open_and_migrate(path, create=empty)


def _refuse(path: str, what: str) -> HistoryFileError:
    return HistoryFileError(f"History file {path} {what}; it was left untouched.")


def _uri(path: str, query: str) -> str:
    return Path(path).absolute().as_uri() + "?" + query


def _validate(path: str) -> bool:
    """
    Check an existing SQLite file through a read-only connection.

    @return: whether it has no tables at all (a new, empty database).
    @raise HistoryFileError: it is not ours, is corrupt, or is too new.
    """
    connection = None
    try:
        connection = _read_only(path)
        schema = connection.execute("SELECT type, name FROM sqlite_master").fetchall()
        if not schema:
            return True
        tables = {name for kind, name in schema if kind == "table"}
        if SCHEMA_TABLE not in tables:
            raise _refuse(path, f"is not a chatroom history database (no {SCHEMA_TABLE} table)")
        rows = connection.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchall()
        if len(rows) != 1 or type(rows[0][0]) is not int or rows[0][0] < 0:
            raise _refuse(path, f"is corrupt (its {SCHEMA_TABLE} table holds {rows!r})")
        version = rows[0][0]
        if version > len(MIGRATIONS):
            raise _refuse(
                path,
                f"was written by a newer chatroom (schema version {version};"
                f" this one knows up to {len(MIGRATIONS)})",
            )
        if version >= 1 and "chunks" not in tables:
            raise _refuse(path, f"is corrupt (schema version {version} but no chunks table)")
        report = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if report != ["ok"]:
            raise _refuse(path, f"is corrupt ({_first_problem(report)})")
        return False
    except sqlite3.Error as error:
        raise _refuse(path, f"is corrupt or unreadable ({error})") from None
    finally:
        if connection is not None:
            connection.close()


def _read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot change the file nor leave anything beside it."""
    journals = any(os.path.exists(path + suffix) for suffix in ("-wal", "-journal"))
    # Without a journal beside it the main file is complete: read it as
    # immutable, which takes no lock and creates no -wal/-shm (a read-only
    # connection to a WAL file would, and could not remove them).  With one,
    # it must be read through SQLite's recovery, and a writer may be at work.
    return sqlite3.connect(_uri(path, "mode=ro" if journals else "immutable=1"), uri=True)


def _first_problem(report: list[str]) -> str:
    """One line out of SQLite's integrity report, which may run to many."""
    lines = [
        line
        for entry in report
        for line in entry.splitlines()
        if line and not line.startswith("***")
    ]
    if len(lines) <= 1:
        return lines[0] if lines else "integrity check failed"
    return f"{lines[0]}, and {len(lines) - 1} more problems"


def _open_and_migrate(path: str, create: bool) -> int:
    """Open read-write, switch to WAL, apply the missing migrations in one
    transaction (all or nothing), and read the newest id."""
    connection = None
    try:
        connection = sqlite3.connect(
            _uri(path, "mode=rwc" if create else "mode=rw"), uri=True, isolation_level=None
        )
        if create:
            # Before anything is written: a page size can only be chosen for an empty file.
            connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN IMMEDIATE")
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if SCHEMA_TABLE in tables:
            (version,) = connection.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()
        else:
            connection.execute(f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            connection.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            version = 0
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                connection.execute(statement)
        connection.execute(f"UPDATE {SCHEMA_TABLE} SET version = ?", (len(MIGRATIONS),))
        connection.execute("COMMIT")
        (newest,) = connection.execute(_NEWEST).fetchone()
        return newest or 0
    except sqlite3.Error as error:
        if create:
            raise HistoryFileError(f"History file {path} cannot be created ({error}).") from None
        raise HistoryFileError(
            f"History file {path} cannot be opened for writing ({error}); nothing in it was changed."
        ) from None
    finally:
        if connection is not None:
            connection.close()


# -- chunks and events ---------------------------------------------------------
#
# A chunk holds events of one room from one write, in id order, in two values.
# C{times}: their times, as little-endian IEEE doubles one after the other, so
# each comes back exactly (formatting floats as text cost more than all the
# rest of the packing).  C{data}: the events joined by RS (\x1e), each five
# fields joined by US (\x1f): the id less the chunk's first_id, the kind, the
# room's display name (empty when it is the chunk's C{room}), nick, and the
# kind's text (the line, the transport, the reason, the topic; for a rename
# the old nick is the nick and the new one the text).  User text never holds
# C0 controls (the session scrubs every line, nick and reason before it
# becomes an event), but the store does not rely on it: RS and US are removed
# from a field that holds them, so a bad value can never split or shift its
# neighbours.

CHUNK_EVENTS = 256
"""Events per chunk at most.  A write of a busy turn (thousands of lines when
the store has fallen behind) is cut into chunks of this size, so a replay
unpacks a few hundred events at most, not a whole turn; and SQLite's cost per
event is lowest about here (larger rows spill over more overflow pages)."""

_RS = "\x1e"
_US = "\x1f"
_FIELDS = 5

_STORED = frozenset((Said, Emote, Joined, Parted, TopicChanged, Renamed, Left))
_LINE_KINDS = {"said": Said, "emote": Emote}
_EVENT_KINDS = {
    "said": Said,
    "emote": Emote,
    "joined": Joined,
    "parted": Parted,
    "topic": TopicChanged,
    "renamed": lambda id_, time, room, nick, text: Renamed(id_, time, (room,), nick, text),
    "left": lambda id_, time, room, nick, text: Left(id_, time, (room,), nick, text),
}


def _chunk_rows(events) -> list[tuple]:
    """
    The rows of one turn's records (or one tool's write): for each room, in
    the order rooms first appear in C{events}, its events in order, in chunks
    of at most L{CHUNK_EVENTS}.

    Runs on the reactor thread as each turn is recorded (the events die with
    their turn), or in a tool.  The events are grouped first and each chunk
    packed in one pass; a chunk of public lines alone (nearly all of them)
    takes the short path.
    """
    keys: dict[str, str] = {}  # display name -> folded key: fold() once per name
    groups: dict[str, list] = {}
    mixed: set[str] = set()  # keys of groups holding more than Said and Emote
    for event in events:
        kind = type(event)
        if kind is Said or kind is Emote:
            room = event.room
            key = keys.get(room)
            if key is None:
                key = keys[room] = fold(room)
            group = groups.get(key)
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        elif kind in _STORED:
            rooms = event.rooms if kind is Renamed or kind is Left else (event.room,)
            for key in dict.fromkeys(fold(room) for room in rooms):
                groups.setdefault(key, []).append(event)
                mixed.add(key)
    return [
        _chunk(key, group[start : start + CHUNK_EVENTS], key in mixed)
        for key, group in groups.items()
        for start in range(0, len(group), CHUNK_EVENTS)
    ]


def _chunk(key: str, events: list, mixed: bool) -> tuple:
    """One row: C{events} of the room C{key}, in order."""
    first = events[0].id
    times = [event.time for event in events]
    if mixed:
        fields = [_fields(event, key) for event in events]
        room = fields[0][2]
        lines = sum(1 for _, name, _, _, _ in fields if name in _LINE_KINDS)
    else:
        fields = None
        room = events[0].room
        lines = len(events)
    data = _data(events, fields, first, room, False)
    if data.count(_RS) != len(events) - 1 or data.count(_US) != (_FIELDS - 1) * len(events):
        # A separator inside a field (never, in practice): pack it scrubbed.
        data = _data(events, fields or [_fields(e, key) for e in events], first, room, True)
    return (
        key,
        room,
        first,
        events[-1].id,
        max(times),
        lines,
        struct.pack(f"<{len(times)}d", *times),
        data,
    )


def _data(events, fields, first: int, room: str, scrub: bool) -> str:
    """The text of a chunk: from the events when C{fields} is None (public
    lines alone), else from their L{_fields}, scrubbed if asked."""
    if fields is None:
        return _RS.join(
            [
                f"{e.id - first}\x1f{'said' if type(e) is Said else 'emote'}"
                f"\x1f{'' if e.room == room else e.room}\x1f{e.nick}\x1f{e.text}"
                for e in events
            ]
        )
    if scrub:
        fields = [(id_, name, *map(_scrub, rest)) for id_, name, *rest in fields]
        room = _scrub(room)
    return _RS.join(
        [
            f"{id_ - first}\x1f{name}\x1f{'' if where == room else where}\x1f{nick}\x1f{text}"
            for id_, name, where, nick, text in fields
        ]
    )


def _scrub(value: str) -> str:
    return value.replace(_RS, "").replace(_US, "")


def _fields(event, key: str) -> tuple:
    """(id, kind, room, nick, text) of C{event} in the room whose key is C{key}."""
    kind = type(event)
    if kind is Said:
        return (event.id, "said", event.room, event.nick, event.text)
    if kind is Emote:
        return (event.id, "emote", event.room, event.nick, event.text)
    if kind is Joined:
        return (event.id, "joined", event.room, event.nick, event.via)
    if kind is Parted:
        return (event.id, "parted", event.room, event.nick, event.reason)
    if kind is TopicChanged:
        return (event.id, "topic", event.room, event.nick, event.text)
    room = next(room for room in event.rooms if fold(room) == key)
    if kind is Renamed:
        return (event.id, "renamed", room, event.old, event.new)
    return (event.id, "left", room, event.nick, event.reason)


def _records(rows) -> int:
    """How many records C{rows} (chunks) hold: a time each."""
    return sum(len(row[6]) for row in rows) // 8


def _times(blob: bytes) -> tuple:
    return struct.unpack(f"<{len(blob) // 8}d", blob)


def _unpack(first_id: int, room: str, times: bytes, data: str) -> list:
    """Every event of a chunk, in id order; a rename or quit as the value for
    this room alone (its C{rooms} holds just this room)."""
    events = []
    for time, part in zip(_times(times), data.split(_RS)):
        delta, kind, where, nick, text = part.split(_US)
        events.append(
            _EVENT_KINDS[kind](first_id + int(delta), time, where or room, nick, text)
        )
    return events


# -- what runs in the pool's thread ---------------------------------------------


def _select_recent(txn, room_key: str, before: int, limit: int) -> list:
    """The last C{limit} public lines of a room below C{before}, oldest first.

    Reads the room's chunks newest first and stops at the first chunk that
    cannot hold one of the C{limit} newest lines found so far: its last id is
    below all of them.  Chunks of one room do not overlap (a write holds every
    record up to its last), so that is the chunk after the one that filled the
    answer; the rule stays right even if they did."""
    txn.execute(_RECENT, (room_key, before))
    found: list = []  # newest first once sorted
    while True:
        row = txn.fetchone()
        if row is None:
            break
        first_id, last_id, room, times, data = row
        if len(found) >= limit and last_id < found[limit - 1].id:
            break
        parts = data.split(_RS)
        times = _times(times)
        for index in range(len(parts) - 1, -1, -1):
            delta, kind, where, nick, text = parts[index].split(_US)
            make = _LINE_KINDS.get(kind)
            if make is not None:
                id_ = first_id + int(delta)
                if id_ < before:
                    found.append(make(id_, times[index], where or room, nick, text))
        if len(found) >= limit:
            found.sort(key=_event_id, reverse=True)
            del found[limit:]
    found.reverse()
    return found


def _select_after(txn, room_key: str, after: int, before: int, limit: int) -> list:
    """The first C{limit} public lines of a room between C{after} and C{before}, oldest first.

    Reads the room's chunks oldest first from the one that ends after C{after}, and
    stops once C{limit} lines are found: chunks of one room do not overlap, so every
    later chunk holds only later lines."""
    txn.execute(_AFTER, (room_key, after, before))
    found: list = []
    while len(found) < limit:
        row = txn.fetchone()
        if row is None:
            break
        first_id, last_id, room, times, data = row
        times = _times(times)
        for index, part in enumerate(data.split(_RS)):
            delta, kind, where, nick, text = part.split(_US)
            make = _LINE_KINDS.get(kind)
            if make is not None:
                id_ = first_id + int(delta)
                if after < id_ < before:
                    found.append(make(id_, times[index], where or room, nick, text))
    found.sort(key=_event_id)
    return found[:limit]


def _event_id(event) -> int:
    return event.id


def _select_newest(txn) -> int:
    txn.execute(_NEWEST)
    (newest,) = txn.fetchone()
    return newest or 0


_DELETE_OLDER = (
    "DELETE FROM chunks WHERE rowid IN (SELECT rowid FROM chunks WHERE last_time < ? LIMIT ?)"
)


def _delete_older(txn, cutoff: float, chunk: int) -> int:
    txn.execute(_DELETE_OLDER, (cutoff, chunk))
    return txn.rowcount


def _checkpoint(txn) -> None:
    txn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _probe(txn) -> None:
    txn.execute(f"SELECT version FROM {SCHEMA_TABLE}")
    txn.fetchall()


def _file_identity(path: str) -> tuple | None:
    """(device, inode) of the file at C{path} now, None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


# -- reading and writing a file from tools and tests --------------------------------


def write_events(path: str, events) -> None:
    """
    Store C{events} in the history file C{path} (made by L{prepare}), packed
    exactly as the running store packs them, in one transaction (synchronous:
    for tools, such as an import, and tests; never while a server uses the file).
    """
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(_INSERT, _chunk_rows(list(events)))
    finally:
        connection.close()



def stored_events(path: str) -> list:
    """
    Every event stored in the history file C{path}, in id order, read through
    a read-only connection that leaves nothing beside the file (synchronous:
    for tools and tests, not the server; a running server's file is read as
    of its last commit).

    A rename or a quit is stored once per room it concerned and comes back
    once per room, as a L{Renamed} or L{Left} whose C{rooms} holds that room
    alone (same id; rooms of one id in folded-name order).

    @raise sqlite3.Error: the file is missing or not a current history.
    """
    if not os.path.isfile(path):
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    connection = _read_only(path)
    try:
        rows = connection.execute(
            "SELECT room_key, first_id, room, times, data FROM chunks"
        ).fetchall()
    finally:
        connection.close()
    keyed = [(event.id, row[0], event) for row in rows for event in _unpack(*row[1:])]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in keyed]


# -- the store ------------------------------------------------------------------


@implementer(IHistoryStore)
class SQLiteHistory:
    """
    The history of every room, in one SQLite file, written in the background.

    @param path: the file, already checked by L{prepare}.
    @param clock: an C{IReactorTime}; when it is a real reactor, the pool's
        thread and shutdown hooks use it too.
    @param pool_factory: builds the connection pool (tests pass a fake).
    @param retention_days: rows older than this are pruned; 0 keeps everything.
    @param max_buffered: the bound on records waiting in memory.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        clock,
        pool_factory=adbapi.ConnectionPool,
        retention_days: float = 0,
        max_buffered: int = MAX_BUFFERED,
        stats: Stats | None = None,
    ) -> None:
        self.path = path
        #: Where write latencies and failures are counted (metrics read them).
        self.stats = stats if stats is not None else Stats()
        self.retention_days = retention_days
        self._clock = clock
        self._pool_factory = pool_factory
        self._max_buffered = max_buffered
        self._pool = None
        # Packed rows (chunks), recorded and not yet handed to the pool, and how many
        # records they hold.  Packed at once: the event objects die with their turn
        # instead of piling up for 50 ms (at a busy server's rate that working set
        # cost the fan-out more than the packing itself), and the pool's thread runs
        # SQLite alone, which releases the GIL.
        self._buffer: deque = deque()
        self._buffered = 0
        self._in_flight: tuple | None = None  # the rows being written
        self._scheduled = None  # the IDelayedCall of the next write
        self._last_write = None  # when the last write started (clock seconds)
        self._busy = 0  # interactions started and not finished, writes included
        self._idle_waiters: list[defer.Deferred] = []
        self._stopping = False
        self._stopped: defer.Deferred | None = None
        self._closed = False
        self._failing = False
        self._lost = 0
        self._reads = 0  # queries started and not answered
        self._file = None  # (device, inode) of the file the connection has open

    # -- life cycle

    def start(self) -> defer.Deferred:
        """
        Open the pool and its one connection.

        @return: a Deferred firing once the connection works; it never fails
            (a failure is logged like a failed write, and chat goes on).
        """
        kwargs = {
            "check_same_thread": False,
            "uri": True,
            "cp_min": 1,
            "cp_max": 1,
            "cp_openfun": self._opened,
        }
        if IReactorThreads.providedBy(self._clock) and IReactorCore.providedBy(self._clock):
            kwargs["cp_reactor"] = self._clock
        self._pool = self._pool_factory("sqlite3", _uri(self.path, "mode=rw"), **kwargs)
        self._pool.start()
        self.log.info(
            "History in {path} (keeping {days} days; 0 is forever)",
            path=self.path,
            days=self.retention_days,
        )
        d = self._run(_probe)
        d.addCallbacks(self._recovered, self._opening_failed)
        self._schedule()
        return d

    def _opening_failed(self, failure) -> None:
        self._lose(0, "cannot open", failure.getErrorMessage())

    def stop(self) -> defer.Deferred:
        """
        Write what is buffered, wait for everything in flight (at most
        L{STOP_GRACE} seconds), then close the pool.

        @return: a Deferred firing once closed; it never fails.
        """
        if self._stopped is not None:
            return self._stopped
        self._stopping = True
        if self._pool is not None and self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
            self._write()
        waiter = defer.Deferred(canceller=self._idle_waiters.remove)
        self._idle_waiters.append(waiter)
        self._check_idle()
        waiter.addTimeout(STOP_GRACE, self._clock, onTimeoutCancel=self._stop_timed_out)
        waiter.addCallback(self._close)
        self._stopped = waiter
        return waiter

    def _stop_timed_out(self, result, timeout):
        waiting = self._buffered + _records(self._in_flight or ())
        self.log.warn(
            "History store: gave up after {timeout}s waiting for {waiting} records to be written",
            timeout=timeout,
            waiting=waiting,
        )
        return False

    def _close(self, idle) -> defer.Deferred | None:
        if self._pool is None:
            self._closed = True
            if self._buffer:
                self._lose(self._buffered, "never started", "stopped before it was started")
                self._buffer.clear()
                self._buffered = 0
            return None
        if idle is False:
            # A write still runs in the pool's thread: closing the pool now
            # would join that thread and block the reactor.  The pool's own
            # shutdown trigger closes it when the process ends.
            self._closed = True
            return None
        d = self._pool.runInteraction(_checkpoint)
        d.addErrback(
            lambda failure: self.log.warn(
                "History checkpoint at stop failed: {error}", error=failure.getErrorMessage()
            )
        )
        d.addCallback(lambda _: self._close_pool())
        return d

    def _close_pool(self) -> None:
        self._closed = True
        self._pool.close()

    # -- writing

    def record_turn(self, events) -> None:
        """
        Keep one turn's C{events} (of L{chatservice.core.events.STORED_EVENTS},
        in order).

        Never blocks: buffers them and makes sure a write is scheduled.
        """
        if self._closed:
            self._lose(len(events), "stopped", "records arrived after the store was stopped")
            return
        buffer = self._buffer
        buffer.extend(_chunk_rows(events))
        self._buffered += len(events)
        if self._buffered > self._max_buffered:
            lost = 0
            while self._buffered - lost > self._max_buffered and len(buffer) > 1:
                lost += _records((buffer.popleft(),))
            self._buffered -= lost
            if lost:
                self._lose(lost, "buffer full", f"more than {self._max_buffered} records waiting")
        if self._scheduled is None and self._in_flight is None:  # else a write will follow
            self._schedule()

    def record(self, event) -> None:
        """Keep one event; other values (private messages) are ignored.  For
        tools and tests: the hub hands over a turn at a time (L{record_turn})."""
        if type(event) in _STORED:
            self.record_turn((event,))

    def _schedule(self) -> None:
        """One write at a time, at most one per turn and one per
        L{WRITE_INTERVAL}: the next one waits for the turn after the last one
        finished, and for the interval since it started."""
        if (
            self._scheduled is None
            and self._in_flight is None
            and self._buffer
            and self._pool is not None
            and not self._closed
        ):
            delay = 0.0
            if self._last_write is not None and not self._stopping:
                delay = max(0.0, self._last_write + WRITE_INTERVAL - self._clock.seconds())
            self._scheduled = self._clock.callLater(delay, self._write)

    def _write(self) -> None:
        self._scheduled = None
        if not self._buffer:
            return
        batch = tuple(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._in_flight = batch
        self._last_write = self._clock.seconds()
        d = self._run(self._insert, batch, whole_connection=True)
        d.addCallback(self._timed, self._last_write)
        d.addCallbacks(self._wrote, self._write_failed, errbackArgs=(batch,))
        d.addBoth(self._written)

    # -- in the pool's thread

    def _opened(self, connection) -> None:
        """Per-connection set-up (the pool's C{cp_openfun}): WAL, so readers never
        wait on the writer, and NORMAL sync, which in WAL mode is still safe
        against corruption and only risks the last commits on a power cut.
        Notes which file it opened, so a write can tell when it was removed."""
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        self._file = _file_identity(self.path)

    def _insert(self, connection, rows) -> bool:
        """
        Write one batch.  An SQLite connection whose file was removed (or
        replaced) goes on writing into the unlinked file without an error, so
        history would vanish silently: each write first checks that the path
        still holds the file it has open.  If not, it makes a new history
        there (or checks the one put there) with L{prepare} and reconnects;
        the batch goes to the new file.

        @return: whether the file had to be opened anew.
        @raise HistoryFileError: no usable file can be had at the path now;
            the batch is lost, and the next write tries again.
        """
        replaced = _file_identity(self.path) != self._file
        if replaced:
            prepare(self.path)
            connection.reconnect()
        cursor = connection.cursor()
        try:
            cursor.executemany(_INSERT, rows)
        finally:
            cursor.close()
        connection.commit()
        return replaced

    def _timed(self, result, started: float):
        self.stats.history_writes.observe(self._clock.seconds() - started)
        return result

    def _wrote(self, replaced: bool) -> None:
        if replaced:
            self.log.warn(
                "History file {path} was removed or replaced while in use;"
                " history goes on in the file now there",
                path=self.path,
            )
        self._recovered()

    def _write_failed(self, failure, batch) -> None:
        self.stats.history_write_failures += 1
        self._lose(_records(batch), "write failed", failure.getErrorMessage())

    def _written(self, _) -> None:
        self._in_flight = None
        self._schedule()
        if self._stopping and self._scheduled is not None:
            # Stopping: no reason to wait for the next turn.
            self._scheduled.cancel()
            self._write()
        self._check_idle()

    def _lose(self, count: int, problem: str, error: str) -> None:
        """Count lost records; log only the first failure of a bad spell."""
        self._lost += count
        if not self._failing:
            self._failing = True
            self.log.error(
                "History store {path} failed ({problem}: {error}); chat goes on,"
                " {lost} records lost so far",
                path=self.path,
                problem=problem,
                error=error,
                lost=self._lost,
            )

    def _recovered(self, _=None) -> None:
        if self._failing:
            self.log.warn(
                "History store recovered; {lost} records were lost", path=self.path, lost=self._lost
            )
            self._failing = False
            self._lost = 0

    # -- reading

    def recent(self, room_key: str, limit: int, before: int | None,
               after: int | None = None) -> defer.Deferred:
        """
        The last C{limit} public lines of a room with an id below C{before}
        (or, given C{after}, the first C{limit} above C{after}: what a client
        that saw C{after} missed), oldest first, as L{Said}/L{Emote} values;
        records not yet written are included, and none twice.

        @param room_key: the room's folded name (a display name works too).
        @param limit: how many lines at most.
        @param before: only ids below this (None: no bound).
        @param after: only ids above this, the oldest first (None: the newest).
        @return: a Deferred firing with a list of events, or failing with
            L{Unavailable} when L{MAX_READS} queries are waiting already.
        """
        if limit <= 0:
            return defer.succeed([])
        if self._reads >= MAX_READS:
            self.log.warn("History busy: {reads} queries waiting; one more refused", reads=self._reads)
            return defer.fail(Unavailable("the history is busy; try again in a moment"))
        key = fold(room_key)
        bound = _NO_UPPER_BOUND if before is None else before
        self._reads += 1
        if after is None:
            d = self._run(_select_recent, key, bound, limit)
        else:
            d = self._run(_select_after, key, after, bound, limit)
        d.addBoth(self._read_done)
        d.addCallback(self._merge_recent, key, bound, limit, after)
        return d

    def _read_done(self, result):
        self._reads -= 1
        return result

    def _merge_recent(self, events, key, bound, limit, after=None) -> list:
        # Merged when the answer arrives, not when asked: the pool runs one
        # interaction at a time in order, so whatever is not in C{events} is
        # still in the buffer or in flight now; ids remove any overlap.
        seen = {event.id for event in events}
        low = -1 if after is None else after
        for event in self._pending(key):
            if (type(event) is Said or type(event) is Emote) and low < event.id < bound and (
                event.id not in seen
            ):
                events.append(event)
        events.sort(key=_event_id)
        return events[:limit] if after is not None else events[-limit:]

    def newest_id(self) -> defer.Deferred:
        """
        The highest id kept, written or not, so ids issued after a restart
        stay above it.

        @return: a Deferred firing with an int (0 when empty).
        """
        d = self._run(_select_newest)
        d.addCallback(lambda newest: max([newest, *(row[3] for row in self._pending_rows())]))
        return d

    def _pending_rows(self):
        yield from self._in_flight or ()
        yield from self._buffer

    def _pending(self, key: str):
        """The records not written yet of the room C{key}, unpacked (a join's
        replay needs them; rare next to writes)."""
        for row in self._pending_rows():
            if row[0] == key:
                yield from _unpack(row[2], row[1], row[6], row[7])

    # -- retention

    @defer.inlineCallbacks
    def prune(self, now: float):
        """
        Delete the chunks older than the retention (their newest event is;
        a chunk spans one reactor turn, so at most that much older is kept),
        L{PRUNE_CHUNK} rows per transaction.

        @param now: the time, in seconds since the epoch.
        @return: a Deferred firing with the number of rows (chunks) deleted.
        """
        if self.retention_days <= 0 or self._pool is None or self._stopping:
            return 0
        cutoff = now - self.retention_days * 86400
        deleted = 0
        while not self._stopping:
            count = yield self._run(_delete_older, cutoff, PRUNE_CHUNK)
            deleted += count
            if count < PRUNE_CHUNK:
                break
        if deleted:
            self.log.info(
                "History pruned {deleted} rows older than {days} days",
                deleted=deleted,
                days=self.retention_days,
            )
        return deleted

    # -- bookkeeping

    def _run(self, interaction, *args, whole_connection: bool = False) -> defer.Deferred:
        """Start an interaction (given a cursor, or the pool's connection
        wrapper if C{whole_connection}), counted so that L{stop} can wait."""
        if self._pool is None or self._closed:
            return defer.fail(RuntimeError(f"history store {self.path} is not running"))
        self._busy += 1
        if whole_connection:
            d = self._pool.runWithConnection(interaction, *args)
        else:
            d = self._pool.runInteraction(interaction, *args)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self._busy -= 1
        self._check_idle()
        return result

    def _check_idle(self) -> None:
        if (
            self._idle_waiters
            and self._busy == 0
            and self._in_flight is None
            and self._scheduled is None
            and not (self._buffer and self._pool is not None)
        ):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(True)


class HistoryService(Service):
    """
    Starts and stops a L{SQLiteHistory} with the service tree, and prunes it
    every L{PRUNE_INTERVAL} seconds (first at start), so retention holds
    without a cron job.

    @param store: the L{SQLiteHistory}.
    @param clock: an C{IReactorTime} for the prune loop.
    """

    log = Logger()

    def __init__(self, store: SQLiteHistory, clock, interval: float = PRUNE_INTERVAL) -> None:
        self.store = store
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        Service.startService(self)
        self.store.start().addErrback(
            lambda failure: self.log.failure("History start failed", failure)
        )
        self._loop = LoopingCall(self._prune)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: self.log.failure("History prune loop stopped", failure)
        )

    def _prune(self) -> defer.Deferred:
        d = self.store.prune(self._clock.seconds())
        d.addErrback(self._prune_failed)
        return d

    def _prune_failed(self, failure) -> None:
        # Not fatal: the next run tries again; returning None keeps the loop going.
        self.log.error("History prune failed: {error}", error=failure.getErrorMessage())

    def stopService(self) -> defer.Deferred:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.store.stop()
