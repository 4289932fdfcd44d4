"""
Units of the client's interactive mode: L{chatservice.terminal}'s line styling and
what it reads off the server's notices, the interactive rules of
L{chatservice.client.ChatClient} (a refused nick asks again, a lost connection
exits 1), the UDP link's retry with another nick, and the console itself on
prompt_toolkit's pipe input and an asyncio loop.  The real terminal is in
C{tests.test_client_terminal}.
"""

import asyncio
import time

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    HANDSHAKE_INTERVAL,
    HANDSHAKE_TIMEOUT,
    ChatClient,
    _UdpLink,
)
from chatservice.terminal import (
    NICK_COLOURS,
    ChatView,
    TerminalConsole,
    fragments,
    nick_colour,
    own_line,
)
from tests.test_client import GREETING, FakeLink
from tests.test_client_udp import SERVER, TOKEN, FakePort

NOON = time.mktime((2026, 12, 7, 12, 30, 0, 0, 0, -1))


def text_of(parts):
    return "".join(text for _, text in parts)


class FragmentTests(SynchronousTestCase):
    """Styles are added; the server's text is shown unchanged."""

    def test_a_line_gets_the_time_it_arrived_and_its_nick_colour(self):
        parts = fragments("bob: hello", NOON)
        self.assertEqual(text_of(parts), "12:30 bob: hello")
        self.assertEqual(parts[0], ("class:time", "12:30 "))
        self.assertIn((f"fg:{nick_colour('bob')}", "bob"), parts)

    def test_history_lines_keep_the_time_they_were_said(self):
        for line in ("[09:58] carol: see you", "[2026-12-01 09:58] carol: see you"):
            parts = fragments(line, NOON)
            self.assertEqual(text_of(parts), line)
            self.assertEqual(parts[0][0], "class:time")

    def test_notices_errors_rooms_and_private_lines_are_styled_apart(self):
        self.assertEqual(fragments("* bob joined", NOON)[1], ("class:notice", "* bob joined"))
        self.assertEqual(fragments("! no such user: x", NOON)[1],
                         ("class:error", "! no such user: x"))
        marked = fragments("[#dev] bob: hi", NOON)
        self.assertEqual(marked[1], ("class:room", "[#dev] "))
        self.assertEqual(text_of(marked), "12:30 [#dev] bob: hi")
        private = fragments("[private] bob: psst", NOON)
        self.assertEqual(private[1], ("class:private", "[private] "))
        self.assertEqual(text_of(fragments("-> bob: hi", NOON)), "12:30 -> bob: hi")

    def test_our_own_nick_is_bold(self):
        parts = fragments("alice: me", NOON, own_nick="Alice")
        self.assertIn((f"class:own fg:{nick_colour('alice')}", "alice"), parts)

    def test_a_nick_has_one_colour_whatever_its_case(self):
        self.assertEqual(nick_colour("Bob"), nick_colour("bob"))
        self.assertIn(nick_colour("bob"), NICK_COLOURS)
        self.assertGreater(len({nick_colour(f"user{i}") for i in range(40)}), 6)

    def test_a_colon_in_text_that_is_no_nick_is_plain(self):
        self.assertEqual(fragments("12 items: done", NOON)[1:], [("", "12 items: done")])


class OwnLineTests(SynchronousTestCase):
    def test_what_we_typed_shows_as_the_others_see_it(self):
        self.assertEqual(own_line("hello", "alice"), "alice: hello")
        self.assertEqual(own_line("/me waves", "alice"), "* alice waves")
        self.assertEqual(own_line("//slash", "alice"), "alice: /slash")

    def test_commands_and_blank_lines_show_nothing_of_ours(self):
        for typed in ("/msg bob hi", "/join #dev", "", "   "):
            self.assertIsNone(own_line(typed, "alice"))


class ChatViewTests(SynchronousTestCase):
    """The current room and our nick, read off the server's notices."""

    def test_follows_the_current_room_and_our_renames(self):
        view = ChatView("alice")
        steps = [
            ("* you are alice; 1 in #lobby: alice", "#lobby", "alice"),
            ("* you joined #dev; 2 here: alice, bob", "#dev", "alice"),
            ("[#lobby] * carol joined", "#dev", "alice"),
            ("* your lines go to #lobby", "#lobby", "alice"),
            ("* bob is now known as bobby", "#lobby", "alice"),
            ("* ALICE is now known as al", "#lobby", "al"),
            ("* you left #lobby; your lines go to #dev", "#dev", "al"),
            ("* you left #dev; you are in no room now (/join #room)", None, "al"),
        ]
        for line, room, nick in steps:
            view.seen(line)
            self.assertEqual((view.room, view.nick), (room, nick), line)

    def test_a_line_said_by_someone_does_not_move_us(self):
        view = ChatView("alice")
        view.seen("* you are alice; 1 in #lobby: alice")
        view.seen("bob: * your lines go to #x")
        view.seen("* bob * your lines go to #x")
        self.assertEqual(view.room, "#lobby")


class InteractiveClientTests(SynchronousTestCase):
    """A person at a terminal: a refused nick asks again; an unasked end is a lost connection."""

    def setUp(self):
        self.shown = []
        self.finished = defer.Deferred()
        self.client = ChatClient("alice", self.shown.append, self.finished, Clock(),
                                 interactive=True)
        self.link = FakeLink()
        self.link.retry_name = self.link.sent.append
        self.client.link = self.link

    def test_a_taken_nick_asks_for_another(self):
        self.client.server_line(GREETING)
        self.client.server_line("! nickname alice is taken, try another")
        self.assertFalse(self.finished.called)
        self.assertTrue(self.client.asking_name)
        self.client.user_line("  ")  # nothing typed: still asking
        self.assertTrue(self.client.asking_name)
        self.client.user_line("carol")
        self.assertEqual(self.link.sent, ["alice", "carol"])
        self.assertEqual(self.client.name, "carol")
        self.assertFalse(self.client.asking_name)

    def test_another_refusal_still_exits_2(self):
        self.client.server_line("! server full (100 clients), try later")
        self.assertEqual(self.successResultOf(self.finished), EXIT_REFUSED)

    def test_a_pipe_still_exits_2_on_a_taken_nick(self):
        finished = defer.Deferred()
        client = ChatClient("alice", [].append, finished, Clock())
        client.link = FakeLink()
        client.server_line("! nickname alice is taken, try another")
        self.assertEqual(self.successResultOf(finished), EXIT_REFUSED)

    def test_a_connection_ended_without_our_quit_is_lost(self):
        self.client.server_line("* you are alice; 1 in #lobby: alice")
        self.client.connection_lost()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)
        self.assertEqual(self.shown[-1], "! the connection to the server was lost")

    def test_leaving_quits_then_exits_0(self):
        self.client.server_line("* you are alice; 1 in #lobby: alice")
        self.client.leave()
        self.assertEqual(self.link.sent, ["/quit"])
        self.client.connection_lost()
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)

    def test_leaving_before_joining_exits_0_at_once(self):
        self.client.leave()
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)


class UdpRetryNameTests(SynchronousTestCase):
    """Over UDP a refused JOIN stops the handshake; another nick starts it again."""

    def setUp(self):
        self.clock = Clock()
        self.finished = defer.Deferred()
        self.shown = []
        self.client = ChatClient("alice", self.shown.append, self.finished, self.clock,
                                 interactive=True)
        self.link = _UdpLink(self.client, self.clock, SERVER)
        self.port = FakePort()
        self.link.makeConnection(self.port)
        self.addCleanup(self.link.stop)

    def test_refusal_stops_the_handshake_until_another_nick(self):
        self.link.datagramReceived(b"TOKEN " + TOKEN + b"\n", SERVER)
        self.link.datagramReceived(b"! nickname alice is taken, try another\n", SERVER)
        self.link.datagramReceived(b"! nickname alice is taken, try another\n", SERVER)
        self.assertEqual(self.shown, ["! nickname alice is taken, try another"])
        sent = len(self.port.sent)
        self.clock.advance(HANDSHAKE_TIMEOUT * 3)  # a person takes their time to answer
        self.assertEqual(len(self.port.sent), sent)
        self.assertFalse(self.finished.called)
        self.client.user_line("carol")
        self.assertEqual(self.port.sent[-1], b"HELLO carol")
        self.clock.advance(HANDSHAKE_INTERVAL)
        self.assertEqual(self.port.sent[-1], b"HELLO carol")
        self.clock.advance(HANDSHAKE_TIMEOUT)  # the new handshake is bounded again
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)


class _Client:
    """What the console needs of a client, recording what it is given."""

    def __init__(self):
        self.name = "alice"
        self.joined = True
        self.asking_name = False
        self.done = False
        self.lines = []
        self.left = 0
        self.console = None

    def user_line(self, text):
        self.lines.append(text)

    def leave(self):
        self.left += 1
        self.done = True


class ConsoleTests(SynchronousTestCase):
    """The console on prompt_toolkit's pipe input, on an asyncio loop of the test's own."""

    def run_console(self, keys, during=None):
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        client = _Client()

        async def scenario():
            with create_pipe_input() as pipe:
                console = TerminalConsole(_LoopClock(loop), input=pipe, output=DummyOutput())
                console.start(client)
                console.show("* you are alice; 1 in #lobby: alice")
                if during is not None:
                    await during(console, pipe)
                pipe.send_text(keys)
                await asyncio.wait_for(console._loop_done.asFuture(loop), 5)
            return console

        return client, loop.run_until_complete(scenario())

    def test_typed_lines_go_to_the_client_and_ctrl_d_leaves(self):
        client, console = self.run_console("hello\r/me waves\r\x04")
        self.assertEqual(client.lines, ["hello", "/me waves"])
        self.assertEqual(client.left, 1)
        self.assertEqual(console.view.room, "#lobby")

    def test_ctrl_c_leaves_with_half_a_line_typed(self):
        client, _ = self.run_console("half a li\x03")
        self.assertEqual(client.lines, [])
        self.assertEqual(client.left, 1)

    def test_lines_typed_while_paused_are_held_until_resumed(self):
        seen = {}

        async def paused(console, pipe):
            console.pause_reading()
            pipe.send_text("one\r")
            for _ in range(500):  # bounded: at most 5 s
                if console._held:
                    break
                await asyncio.sleep(0.01)
            seen["while paused"] = list(console.client.lines)
            console.resume_reading()

        client, _ = self.run_console("\x04", during=paused)
        self.assertEqual(seen["while paused"], [])
        self.assertEqual(client.lines, ["one"])


class _LoopClock:
    """An asyncio loop as the console's clock (its reactor in the real client)."""

    def __init__(self, loop):
        self._loop = loop

    def seconds(self):
        return time.time()

    def callLater(self, delay, fn, *args):
        return self._loop.call_later(delay, fn, *args)
