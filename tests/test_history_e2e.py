"""
History end to end, with the real C{twistd -n chatroom} from the venv: a
history file that is not ours stops the start cleanly and is left alone, and
what was said in two rooms survives a restart with its original times.

This runs the installed project (reinstall after changing it).  Servers
listen on 127.0.0.1 on a port the kernel picks, read from their log line;
every wait is bounded and on an event (a line, an exit), never a sleep.
"""

import os
import re
import sqlite3
import time

from twisted.internet import defer

from chatservice.backends.history import stored_events, write_events
from chatservice.core.events import Emote, Left, Said

from tests import support
from tests.test_ops import EXIT_WAIT, START_WAIT, STREAM_LISTENING, _TwistdHarness

#: A replayed line: C{[HH:MM] body} (the date too when it is not today's).
REPLAYED = re.compile(r"^\[(?P<when>[0-9: -]+)\] (?P<body>.*)$")


def fingerprint(folder: str) -> dict:
    """Every file in C{folder} with its bytes: what a start must not change."""
    found = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            found[name] = f.read()
    return found


class BadHistoryFileTests(_TwistdHarness):
    """
    A history file that is not a chatroom history database, or is corrupt:
    exit status 1, one clear line on stderr naming the file, no traceback,
    nothing listening, and the file byte for byte as it was, with no
    C{-wal}, C{-shm} or C{-journal} beside it.
    """

    def setUp(self):
        super().setUp()
        self.folder = os.path.join(self.workdir, "data")
        os.mkdir(self.folder)
        self.path = os.path.join(self.folder, "history.sqlite3")

    @defer.inlineCallbacks
    def assert_refused(self, says, *daemon):
        """Start twistd on the file; check it refuses it, says C{says}, and touched nothing."""
        before = fingerprint(self.folder)
        argv = list(daemon) if daemon else ["-n", "--pidfile="]
        server = self.twistd(
            *argv, "chatroom", "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off",
            "--history", self.path,
        )
        self.assertEqual((yield server.wait_for_exit(START_WAIT)), 1, server.output)
        self.assertNotIn(b"Traceback", server.output)
        self.assertIsNone(re.search(STREAM_LISTENING, server.output))
        [line] = server.err.decode().splitlines()
        self.assertTrue(line.startswith(f"chatroom: History file {self.path} "), line)
        self.assertIn(says, line)
        self.assertTrue(line.endswith("; it was left untouched."), line)
        self.assertEqual(fingerprint(self.folder), before)
        return line

    def test_a_text_file(self):
        with open(self.path, "w") as f:
            f.write("shopping list\neggs\nmilk\n")
        return self.assert_refused("is not a chatroom history database")

    def test_an_unrelated_sqlite_database(self):
        connection = sqlite3.connect(self.path)
        with connection:
            connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            connection.executemany(
                "INSERT INTO customers (name) VALUES (?)", [(f"n{i}",) for i in range(500)]
            )
        connection.close()
        return self.assert_refused("is not a chatroom history database")

    def history_with_rows(self) -> bytes:
        """A real history file (schema from L{prepare}) with many rows; its bytes."""
        from chatservice.backends import history

        history.prepare(self.path)
        write_events(
            self.path,
            [Said(i, 1_800_000_000.0 + i, "#lobby", "alice", "x" * 200) for i in range(1, 3000)],
        )
        for suffix in ("-wal", "-shm"):
            self.assertFalse(os.path.exists(self.path + suffix))
        with open(self.path, "rb") as f:
            return f.read()

    def test_a_truncated_database(self):
        data = self.history_with_rows()
        with open(self.path, "wb") as f:
            f.write(data[: len(data) // 2])
        return self.assert_refused("is corrupt")

    def test_a_database_with_garbled_pages(self):
        from chatservice.backends.history import PAGE_SIZE

        data = bytearray(self.history_with_rows())
        data[3 * PAGE_SIZE : 3 * PAGE_SIZE + 2000] = b"Z" * 2000  # a page of chunks, header on
        with open(self.path, "wb") as f:
            f.write(bytes(data))
        return self.assert_refused("is corrupt")

    def test_daemon_mode_says_it_before_detaching(self):
        """The file is checked before twistd forks: the operator's shell sees the line."""
        with open(self.path, "w") as f:
            f.write("not a database\n")
        pidfile = os.path.join(self.workdir, "chatroom.pid")
        logfile = os.path.join(self.workdir, "chatroom.log")
        d = self.assert_refused(
            "is not a chatroom history database", f"--pidfile={pidfile}", f"--logfile={logfile}"
        )
        d.addCallback(lambda _: self.assertFalse(os.path.exists(pidfile)))
        return d


class RestartSurvivalTests(_TwistdHarness):
    """
    Users chat in #lobby and #dev; SIGTERM; the server starts again on the
    same file; a new user joining each room sees its lines replayed with the
    times they were said, in order, none missing, none twice.  The leaves of
    the shutdown are in the file too.
    """

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.workdir, "history.sqlite3")
        #: (room, body as replayed, earliest and latest time the server can have stamped it)
        self.said = []

    @defer.inlineCallbacks
    def start(self):
        """twistd -n on the history file, times shown in UTC; fire with (process, TCP port)."""
        server = self.twistd(
            "-n", "--pidfile=", "chatroom", "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off",
            "--history", self.path, "--shutdown-grace", "5",
            env={"TZ": "UTC"},
        )
        found = yield server.wait_for_output(STREAM_LISTENING, START_WAIT)
        return server, int(found.group(3))

    @defer.inlineCallbacks
    def stop(self, server, users):
        """SIGTERM; everyone is told and hung up on; fire once it has exited 0."""
        server.transport.signalProcess("TERM")
        for user in users:
            yield user.read_until("* server shutting down")
            yield user.wait_closed()
        self.assertEqual((yield server.wait_for_exit(EXIT_WAIT)), 0, server.output)
        self.assertNotIn(b"Traceback", server.output)

    @defer.inlineCallbacks
    def user(self, port, nick):
        user = yield support.connect(self.reactor, port)
        self.addCleanup(user.close)
        yield support.log_in(user, nick)
        return user

    @defer.inlineCallbacks
    def line(self, sender, text, room, witness, seen):
        """
        C{sender} sends C{text} to its current room C{room}; wait until
        C{witness} shows it as C{seen}.  Note the window in which the server
        stamped it: after the send, before it was seen.
        """
        before = time.time()
        sender.send(text.encode("utf-8") + b"\r\n")
        yield witness.read_until(seen)
        after = time.time()
        body = seen.removeprefix(f"[{room}] ")
        self.said.append((room, body, before, after))

    @defer.inlineCallbacks
    def chat_in_two_rooms(self, port):
        alice = yield self.user(port, "alice")
        bob = yield self.user(port, "bob")
        yield alice.read_until("* bob joined")
        # Both in #lobby, which is current for both.
        yield self.line(alice, "hello lobby", "#lobby", bob, "alice: hello lobby")
        yield self.line(bob, "hi alice, caf\u00e9 at 10? \u2615", "#lobby", alice,
                        "bob: hi alice, caf\u00e9 at 10? \u2615")
        yield self.line(alice, "/me waves at the lobby", "#lobby", bob,
                        "* alice waves at the lobby")
        # Both join #dev, which becomes current for both.
        alice.send(b"/join #dev\r\n")
        yield alice.read_until("* you joined #dev; 1 here: alice")
        bob.send(b"/join #dev\r\n")
        yield bob.read_until("* you joined #dev; 2 here: alice, bob")
        yield alice.read_until("* bob joined")
        yield self.line(bob, "dev talk starts", "#dev", alice, "bob: dev talk starts")
        yield self.line(alice, "/me opens the editor", "#dev", bob, "* alice opens the editor")
        yield self.line(alice, "second dev line", "#dev", bob, "alice: second dev line")
        yield self.line(bob, "/me nods", "#dev", alice, "* bob nods")
        # alice goes back to #lobby; each now hears the other from another room.
        alice.send(b"/join #lobby\r\n")
        yield alice.read_until("* your lines go to #lobby")
        yield self.line(alice, "back in the lobby", "#lobby", bob,
                        "[#lobby] alice: back in the lobby")
        yield self.line(bob, "still in dev", "#dev", alice, "[#dev] bob: still in dev")
        return alice, bob

    def expected(self, room):
        return [body for where, body, _, _ in self.said if where == room]

    def assert_replay(self, lines, room, replayed_between):
        """
        C{lines} are C{* history of ROOM}, one C{[HH:MM] body} per line said
        there, in order, and C{* end of history}; each time is when it was
        said (in UTC), not when it was replayed.
        """
        self.assertEqual(lines[0], f"* history of {room}", lines)
        self.assertEqual(lines[-1], "* end of history", lines)
        replayed = [REPLAYED.match(line) for line in lines[1:-1]]
        self.assertNotIn(None, replayed, lines)
        self.assertEqual([match["body"] for match in replayed], self.expected(room))
        said = [(before, after) for where, _, before, after in self.said if where == room]
        for match, (before, after) in zip(replayed, said):
            shown = {
                label(moment, now)
                for moment in (before, after)
                for now in replayed_between
            }
            self.assertIn(match["when"], shown, f"{match.string} was said in {shown}")

    def assert_stored_times(self):
        """The file holds each line once, stamped within the window it was said in."""
        rows = [
            (event.room, "said" if type(event) is Said else "emote", event.nick, event.text,
             event.time)
            for event in stored_events(self.path) if type(event) in (Said, Emote)
        ]
        self.assertEqual(len(rows), len(self.said))
        for (room, kind, nick, text, moment), (where, body, before, after) in zip(
            rows, self.said
        ):
            shown = f"{nick}: {text}" if kind == "said" else f"* {nick} {text}"
            self.assertEqual((room, shown), (where, body))
            self.assertTrue(before <= moment <= after, (body, before, moment, after))

    def assert_leaves_recorded(self):
        """The shutdown's leaves are in the file: one row per room each user was in."""
        rows = [
            (event.nick, room, event.reason)
            for event in stored_events(self.path) if type(event) is Left
            for room in event.rooms
        ]
        self.assertEqual(
            sorted(rows),
            [
                ("alice", "#dev", "server shutting down"),
                ("alice", "#lobby", "server shutting down"),
                ("bob", "#dev", "server shutting down"),
                ("bob", "#lobby", "server shutting down"),
            ],
        )

    @defer.inlineCallbacks
    def test_history_survives_a_restart(self):
        server, port = yield self.start()
        users = yield self.chat_in_two_rooms(port)
        yield self.stop(server, users)

        self.assert_leaves_recorded()
        self.assert_stored_times()

        server, port = yield self.start()
        before = time.time()
        carol = yield self.user(port, "carol")  # lands in #lobby
        lobby = yield carol.read_until("* end of history")
        carol.send(b"/join #dev\r\n")
        self.assertEqual((yield carol.next_line()), "* you joined #dev; 1 here: carol")
        dev = yield carol.read_until("* end of history")
        after = time.time()
        self.assert_replay(lobby, "#lobby", (before, after))
        self.assert_replay(dev, "#dev", (before, after))
        self.assertEqual(len(self.expected("#lobby")), 4)
        self.assertEqual(len(self.expected("#dev")), 5)
        # The restarted server carries on after the history: a live line still goes through.
        dave = yield self.user(port, "dave")
        self.assertEqual((yield carol.next_line()), "[#lobby] * dave joined")
        dave.send(b"after the restart\r\n")
        self.assertEqual((yield carol.next_line()), "[#lobby] dave: after the restart")
        yield self.stop(server, [carol, dave])


def label(moment: float, now: float) -> str:
    """How the server shows the time of a line said at C{moment}, replayed at C{now}, in UTC."""
    when = time.gmtime(moment)
    if time.gmtime(now)[:3] == when[:3]:
        return time.strftime("%H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)

