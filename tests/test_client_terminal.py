"""
chatroom-client at a real terminal: the client from this source tree runs in a tmux
pane (a real pseudo-terminal, so it takes its interactive mode), typed at with
C{send-keys} and read with C{capture-pane}, against the real service started
in-process on 127.0.0.1.  The other users are raw TCP users (L{support.LineClient}).

Every wait polls the pane or a user's lines with a bounded timeout; nothing sleeps.
C{make test} installs tmux (its C{test-programs} target).
"""

import os
import re
import shlex
import shutil
import tempfile

import trustme
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from chatservice import tap
from tests import support

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_INTERVAL = 0.05
#: An SGR sequence that sets a colour (30-37, 90-97, 38;...), as tmux re-encodes them.
COLOUR_SGR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])[;m]")


class TerminalClientTests(TestCase):
    """The interactive client, as a person at a terminal uses it."""

    timeout = 90

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        if shutil.which("tmux") is None:
            self.fail("tmux is not installed; `make test-programs` installs it")
        self.folder = tempfile.mkdtemp(prefix="chatroom-terminal-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.tmux = support.Tmux(reactor, self.folder)
        self.addCleanup(self.tmux.kill)

    # -- helpers -------------------------------------------------------------

    def start_server(self, tcp="tcp:0:interface=127.0.0.1", udp="off"):
        """The real service; return the L{support.ListenRecorder} that saw its ports."""
        options = tap.Options()
        options.parseOptions(["--tcp", tcp, "--udp", udp, "--irc", "off", "--web", "off",
                              "--history", "none"])
        listeners = support.ListenRecorder(self.reactor)
        self.service = tap.makeService(options, reactor=listeners)
        self.service.startService()
        self.addCleanup(self.stop_server)
        return listeners

    def stop_server(self):
        if self.service.running:
            return self.service.stopService()
        return None

    def tcp_port(self, listeners):
        return listeners.tcp_ports[0].getHost().port

    def start_client(self, *args, env=""):
        """The client in a 120x30 pane; the pane says C{EXIT=<code>} when it ends."""
        argv = " ".join(shlex.quote(a) for a in support.client_argv(*args))
        command = f"cd {shlex.quote(REPO)} && {env} {argv}; echo EXIT=$?; sleep 600"
        return self.tmux.start(command, width=120, height=30)

    @defer.inlineCallbacks
    def join(self, port, nick):
        user = yield support.connect(self.reactor, port)
        self.addCleanup(user.close)
        yield support.log_in(user, nick)
        return user

    def pane(self, escapes=False):
        if escapes:
            return self.tmux.run("capture-pane", "-p", "-e", "-t", self.tmux.session)
        return self.tmux.pane()

    def type_keys(self, text):
        """Type C{text} without Enter."""
        return self.tmux.run("send-keys", "-t", self.tmux.session, "-l", text)

    @defer.inlineCallbacks
    def wait_for_pane(self, check, what, timeout=support.WAIT):
        """Poll the pane until C{check(screen)} is true; fire with the screen."""
        deadline = self.reactor.seconds() + timeout
        while True:
            screen = yield self.pane()
            if check(screen):
                return screen
            if self.reactor.seconds() >= deadline:
                raise support.WaitTimedOut(
                    f"waited {timeout}s in vain for {what}; the pane shows:\n{screen.rstrip()}"
                )
            yield task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)

    def wait_for_text(self, text, timeout=support.WAIT):
        return self.wait_for_pane(lambda screen: text in screen, repr(text), timeout)

    @defer.inlineCallbacks
    def alice_and_bob(self):
        """The server, bob on a raw socket, and alice's client at its prompt; fire with bob."""
        port = self.tcp_port(self.start_server())
        bob = yield self.join(port, "bob")
        yield self.start_client("--name", "alice", "--port", str(port))
        yield self.wait_for_text("#lobby>")
        yield bob.read_until("* alice joined")
        return bob

    @staticmethod
    def lines(screen):
        """The pane's lines with text, without trailing blanks."""
        return [line.rstrip() for line in screen.splitlines() if line.strip()]

    # -- the tests -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_lines_arriving_while_typing_leave_the_input_line_intact(self):
        port = self.tcp_port(self.start_server())
        bob = yield self.join(port, "bob")
        yield self.start_client("--name", "alice", "--port", str(port))
        yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["#lobby>"], "the prompt")
        yield bob.read_until("* alice joined")
        yield self.type_keys("I am typing a long sente")
        yield self.wait_for_text("#lobby> I am typing a long sente")
        for line in ("one", "two", "three"):
            bob.send(f"{line}\n".encode())
        typing = "#lobby> I am typing a long sente"
        screen = yield self.wait_for_pane(
            lambda s: "bob: three" in s and self.lines(s)[-1] == typing,
            "the three lines, then the input line redrawn")
        shown = self.lines(screen)
        # The three lines, in order, above the input line, which is intact and last.
        self.assertEqual(shown[-1], "#lobby> I am typing a long sente")
        said = [line for line in shown if re.fullmatch(r"\d\d:\d\d bob: \w+", line)]
        self.assertEqual([line[6:] for line in said], ["bob: one", "bob: two", "bob: three"])
        self.assertEqual(shown[-4:-1], said)
        yield self.type_keys("nce")
        yield self.tmux.press("Enter")
        got = yield bob.next_line()
        self.assertEqual(got, "alice: I am typing a long sentence")
        # Our own line shows with our nick, once, and the input line is empty again.
        screen = yield self.wait_for_pane(
            lambda s: self.lines(s)[-1:] == ["#lobby>"], "an empty input line")
        shown = self.lines(screen)
        self.assertRegex(shown[-2], r"^\d\d:\d\d alice: I am typing a long sentence$")
        self.assertEqual(sum("I am typing" in line for line in shown), 1)

    @defer.inlineCallbacks
    def test_rooms_private_lines_and_commands(self):
        port = self.tcp_port(self.start_server())
        bob = yield self.join(port, "bob")
        bob.send(b"/join #dev\n")
        yield bob.read_until("* you joined #dev; 1 here: bob")
        yield self.start_client("--name", "alice", "--port", str(port))
        yield self.wait_for_text("#lobby>")
        bob.send(b"in dev\n/msg alice psst\n/join #lobby\n")
        yield self.wait_for_text("[private] bob: psst")
        yield self.tmux.type_line("/me waves")
        yield bob.read_until("* alice waves")
        yield self.tmux.type_line("/msg bob hi")
        yield self.tmux.type_line("/join #dev")
        screen = yield self.wait_for_pane(
            lambda s: self.lines(s)[-1:] == ["#dev>"], "the prompt to show #dev")
        shown = "\n".join(self.lines(screen))
        self.assertRegex(shown, r"\d\d:\d\d \* alice waves")
        self.assertRegex(shown, r"\d\d:\d\d -> bob: hi")
        self.assertRegex(shown, r"\d\d:\d\d \* you joined #dev; 2 here: bob, alice")
        yield self.tmux.type_line("/join #lobby")
        yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["#lobby>"], "#lobby again")
        bob.send(b"/join #dev\nfrom dev\n")
        # A line from a room that is not the current one is marked with its room.
        yield self.wait_for_text("[#dev] bob: from dev")
        yield self.tmux.press("Up")  # the input history: the last line typed comes back
        yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["#lobby> /join #lobby"],
                                 "the last line typed back on Up")

    @defer.inlineCallbacks
    def test_a_taken_nick_asks_for_another(self):
        port = self.tcp_port(self.start_server())
        bob = yield self.join(port, "alice")
        yield self.start_client("--name", "alice", "--port", str(port))
        screen = yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["nickname>"],
                                          "the nickname prompt")
        self.assertIn("! nickname alice is taken, try another", screen)
        yield self.tmux.type_line("carol")
        yield bob.read_until("* carol joined")
        yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["#lobby>"], "the prompt")
        yield self.tmux.type_line("hello")
        self.assertEqual((yield bob.next_line()), "carol: hello")

    @defer.inlineCallbacks
    def test_ctrl_c_quits_and_exits_0(self):
        bob = yield self.alice_and_bob()
        yield self.type_keys("half a line")
        yield self.wait_for_text("#lobby> half a line")
        yield self.tmux.press("C-c")
        self.assertEqual((yield bob.next_line()), "* alice left (quit)")
        screen = yield self.wait_for_text("EXIT=")
        self.assertIn("EXIT=0", screen)
        self.assertIn("* goodbye", screen)

    @defer.inlineCallbacks
    def test_ctrl_d_quits_and_exits_0(self):
        bob = yield self.alice_and_bob()
        yield self.tmux.press("C-d")
        self.assertEqual((yield bob.next_line()), "* alice left (quit)")
        self.assertIn("EXIT=0", (yield self.wait_for_text("EXIT=")))

    @defer.inlineCallbacks
    def test_a_lost_connection_is_said_and_exits_1(self):
        port = self.tcp_port(self.start_server())
        yield self.start_client("--name", "alice", "--port", str(port))
        yield self.wait_for_text("#lobby>")
        yield self.stop_server()
        screen = yield self.wait_for_text("EXIT=")
        self.assertIn("! the connection to the server was lost", screen)
        self.assertIn("EXIT=1", screen)

    @defer.inlineCallbacks
    def test_colour_per_nick_and_no_colour_with_NO_COLOR(self):
        port = self.tcp_port(self.start_server())
        bob = yield self.join(port, "bob")
        yield self.start_client("--name", "alice", "--port", str(port))
        yield self.wait_for_text("#lobby>")
        bob.send(b"coloured\n")
        yield self.wait_for_text("bob: coloured")
        screen = yield self.pane(escapes=True)
        [line] = [line for line in screen.splitlines() if "coloured" in line]
        self.assertRegex(line, COLOUR_SGR.pattern + r"bob")
        yield self.tmux.press("C-d")
        yield self.wait_for_text("EXIT=0")

        self.tmux = support.Tmux(self.reactor, self.folder)  # a terminal of its own
        self.addCleanup(self.tmux.kill)
        yield self.start_client("--name", "carol", "--port", str(port), env="NO_COLOR=1")
        yield self.wait_for_text("#lobby>")
        bob.send(b"plain\n")
        yield self.wait_for_text("bob: plain")
        screen = yield self.pane(escapes=True)
        self.assertIsNone(COLOUR_SGR.search(screen), repr(screen))

    @defer.inlineCallbacks
    def test_udp_taken_nick_then_chat(self):
        listeners = self.start_server(udp="udp:0:interface=127.0.0.1")
        port = self.tcp_port(listeners)
        udp_port = listeners.udp_ports[0].getHost().port
        bob = yield self.join(port, "alice")
        yield self.start_client("--name", "alice", "--udp", "--port", str(udp_port))
        screen = yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["nickname>"],
                                          "the nickname prompt")
        self.assertEqual(screen.count("! nickname alice is taken"), 1)
        yield self.tmux.type_line("carol")
        yield bob.read_until("* carol joined")
        yield self.tmux.type_line("over udp")
        self.assertEqual((yield bob.next_line()), "carol: over udp")
        yield self.tmux.press("C-c")
        self.assertEqual((yield bob.next_line()), "* carol left (quit)")
        self.assertIn("EXIT=0", (yield self.wait_for_text("EXIT=")))

    @defer.inlineCallbacks
    def test_tls(self):
        ca = trustme.CA()
        ca_file = os.path.join(self.folder, "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        key_file = os.path.join(self.folder, "server.pem")
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(key_file)
        listeners = self.start_server(
            tcp=f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={key_file}")
        port = listeners.ssl_ports[0].getHost().port
        yield self.start_client("--name", "alice", "--host", "localhost", "--port", str(port),
                                "--tls", "--cafile", ca_file)
        yield self.wait_for_pane(lambda s: self.lines(s)[-1:] == ["#lobby>"], "the prompt")
        yield self.tmux.type_line("/who")
        yield self.wait_for_text("* 1 in #lobby: alice (tcp)")
        yield self.tmux.press("C-d")
        self.assertIn("EXIT=0", (yield self.wait_for_text("EXIT=")))
