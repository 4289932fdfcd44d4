"""
End to end: C{twistd -n chatroom} from the venv as a real process on ports
the kernel picks (port 0), raw TCP users, and a clean stop on SIGTERM.

This runs the installed project (the dropin in site-packages), as a user's
C{twistd chatroom} would.  The server's log line says when and where it
listens; every wait is bounded, and the process is killed in cleanup
whatever happens.
"""

import os
import shutil
import sys
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests import support

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
GREETING = "* welcome to chatroom, what is your nickname?"
#: Starting Python, Twisted and the plugin scan can be slow on a busy machine.
START_WAIT = 30.0
#: How long the server may take to exit after SIGTERM (its grace is 2 s).
EXIT_WAIT = 5.0
#: The line each listener logs once it listens, with the port the kernel gave it.
TCP_LISTENING = rb"TCP line chat listening on 127\.0\.0\.1:(\d+)\r?\n"
UDP_LISTENING = rb"UDP chat listening on 127\.0\.0\.1:(\d+)\r?\n"


class TwistdTests(TestCase):
    timeout = 120

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def spawn_twistd(self, *extra):
        # Outside the project: twistd may leave files in its working directory.
        workdir = tempfile.mkdtemp(prefix="chatroom-e2e-")
        self.addCleanup(shutil.rmtree, workdir, True)
        self.workdir = workdir
        self.history = os.path.join(workdir, "history.sqlite3")
        argv = [
            TWISTD, "-n", "--pidfile=", "chatroom",
            "--tcp", "tcp:0:interface=127.0.0.1",
            "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
            # History on, as users run it, in a file of this test's own.
            "--history", self.history,
            *extra,
        ]
        # The installed project, not this tree: no PYTHONPATH of ours.
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        environment["PYTHONUNBUFFERED"] = "1"
        watcher = support.ProcessWatcher(self.reactor)
        self.reactor.spawnProcess(watcher, TWISTD, argv, env=environment, path=workdir)
        self.addCleanup(watcher.kill)
        return watcher

    @defer.inlineCallbacks
    def start_server(self, *extra):
        """Start twistd on kernel-chosen ports; fire with it and its TCP port once both listen."""
        server = self.spawn_twistd(*extra)
        found = yield server.wait_for_output(TCP_LISTENING, START_WAIT)
        yield server.wait_for_output(UDP_LISTENING, START_WAIT)
        return server, int(found.group(1))

    def assert_exited_0(self, server):
        """The process ended by exiting 0 (not by a signal, not with an error)."""
        self.assertEqual(
            (server.exit_code, server.signal),
            (0, None),
            "twistd should exit 0 after a clean shutdown on SIGTERM "
            f"(exit code {server.exit_code}, signal {server.signal})",
        )

    @defer.inlineCallbacks
    def join(self, port, nick, line_end):
        user = yield support.connect(self.reactor, port)
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), GREETING)
        user.send(nick.encode() + line_end)
        yield user.read_until("* type /help for commands")
        return user

    @defer.inlineCallbacks
    def test_chat_then_sigterm_says_goodbye_and_exits_0(self):
        server, port = yield self.start_server()

        alice = yield self.join(port, "alice", b"\n")
        bob = yield self.join(port, "bob", b"\r\n")
        self.assertEqual((yield alice.next_line()), "* bob joined")
        alice.send("hi bob ☺\n".encode())
        self.assertEqual((yield bob.next_line()), "alice: hi bob ☺")
        bob.send(b"/msg alice psst\r\n")
        self.assertEqual((yield alice.next_line()), "[private] bob: psst")
        self.assertEqual((yield bob.next_line()), "-> alice: psst")  # the sender's copy
        bob.send(b"/me waves\r\n")
        self.assertEqual((yield alice.next_line()), "* bob waves")
        # Someone still choosing a nick hears the goodbye too.
        newcomer = yield support.connect(self.reactor, port)
        self.addCleanup(newcomer.close)
        self.assertEqual((yield newcomer.next_line()), GREETING)

        server.transport.signalProcess("TERM")

        for user in (alice, bob, newcomer):
            self.assertEqual((yield user.next_line()), "* server shutting down")
        for user in (alice, bob, newcomer):
            yield user.wait_closed()
            self.assertEqual(user.unread(), [])
        yield server.wait_for_exit(EXIT_WAIT)
        self.assertIn(b"saying goodbye to 3 users", server.output)
        self.assertIn(b"Server Shut Down.", server.output)
        self.assertNotIn(b"Traceback", server.output)
        self.assertNotIn(b"grace of", server.output)  # nobody needed the grace
        self.assert_exited_0(server)

    @defer.inlineCallbacks
    def test_sigterm_with_nobody_connected_exits_0(self):
        server, port = yield self.start_server()
        # twistd logs "listening on" before its reactor runs and takes over
        # SIGTERM; a greeting (sent from the running reactor) proves it has.
        visitor = yield support.connect(self.reactor, port)
        self.addCleanup(visitor.close)
        self.assertEqual((yield visitor.next_line()), GREETING)
        yield visitor.close()
        server.transport.signalProcess("TERM")
        yield server.wait_for_exit(EXIT_WAIT)
        self.assertIn(b"Shutting down; saying goodbye to", server.output)
        self.assertIn(b"Server Shut Down.", server.output)
        self.assertNotIn(b"Traceback", server.output)
        self.assert_exited_0(server)

    @defer.inlineCallbacks
    def test_two_users_in_two_rooms(self):
        """Issue 9 over the wire: a current room unmarked, the other marked, user events once."""
        server, port = yield self.start_server()
        alice = yield self.join(port, "alice", b"\n")
        bob = yield self.join(port, "bob", b"\r\n")

        @defer.inlineCallbacks
        def expect(user, *lines):
            got = yield user.read_lines(len(lines))
            self.assertEqual(got, list(lines))

        yield expect(alice, "* bob joined")
        alice.send(b"/join #dev\n")
        yield expect(alice, "* you joined #dev; 1 here: alice")
        bob.send(b"/join #dev\r\n")
        yield expect(bob, "* you joined #dev; 2 here: alice, bob")
        yield expect(alice, "* bob joined")
        bob.send(b"/join #lobby\r\n")
        yield expect(bob, "* your lines go to #lobby")

        # Each sees its current room's lines as before, the other room's marked.
        alice.send("in dev, ☺\n".encode())
        yield expect(bob, "[#dev] alice: in dev, ☺")
        bob.send(b"in the lobby\r\n")
        yield expect(alice, "[#lobby] bob: in the lobby")
        alice.send(b"/topic shipping friday\n")
        yield expect(alice, "* alice set the topic: shipping friday")
        yield expect(bob, "[#dev] * alice set the topic: shipping friday")
        bob.send(b"/rooms\r\n")
        yield expect(bob, "* 2 rooms:", "*   #dev (2): shipping friday", "*   #lobby (2)")

        # Sharing two rooms, each sees a rename once; the answer to /who comes next.
        alice.send(b"/nick alicia\n")
        yield expect(alice, "* alice is now known as alicia")
        yield expect(bob, "* alice is now known as alicia")
        bob.send(b"/who #dev\r\n")
        yield expect(bob, "* 2 in #dev: alicia (tcp), bob (tcp)")

        alice.send(b"/part #dev later\n")
        yield expect(alice, "* you left #dev; your lines go to #lobby")
        yield expect(bob, "[#dev] * alicia left the room (later)")
        bob.send(b"/join #dev\r\n")
        yield expect(bob, "* your lines go to #dev")
        alice.send(b"back in the lobby\n")
        yield expect(bob, "[#lobby] alicia: back in the lobby")
        bob.send(b"/msg alicia private, across rooms\r\n")
        yield expect(alice, "[private] bob: private, across rooms")
        yield expect(bob, "-> alicia: private, across rooms")

        # A quit is shown once; #dev empties when bob leaves it, the lobby stays.
        alice.send(b"/join #dev\n/quit bye\n")
        yield expect(alice, "* you joined #dev; 2 here: bob, alicia; topic: shipping friday",
                     "* goodbye")
        yield alice.wait_closed()
        yield expect(bob, "* alicia joined", "* alicia left (bye)")
        bob.send(b"/part\r\n/rooms\r\n")
        yield expect(bob, "* you left #dev; your lines go to #lobby",
                     "* 1 room:", "*   #lobby (1)")

        server.transport.signalProcess("TERM")
        yield expect(bob, "* server shutting down")
        yield bob.wait_closed()
        self.assertEqual(bob.unread(), [])
        self.assertEqual(alice.unread(), [])
        yield server.wait_for_exit(EXIT_WAIT)
        self.assertNotIn(b"Traceback", server.output)
        self.assert_exited_0(server)
        self.assertTrue(os.path.exists(self.history), "the history went to --history")
        self.assertNotIn("chatroom.sqlite3", os.listdir(self.workdir))  # no default file
