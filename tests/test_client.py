"""
Tests for L{chatservice.client}, the bundled chatroom-client.

Units drive L{ChatClient} and its TCP and console ends with fakes; the
process tests run the client from this source tree against the real service
started in-process on 127.0.0.1 port 0, through C{reactor.spawnProcess}.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice import client
from chatservice.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    ChatClient,
    Options,
    _Console,
    _TcpLink,
)
from tests import support

GREETING = "* welcome to chatroom, what is your nickname?"


class FakeLink:
    """Records what the client sends."""

    def __init__(self):
        self.sent = []

    def send_line(self, text):
        self.sent.append(text)

    def quit(self):
        self.sent.append("/quit")


class ChatClientTests(SynchronousTestCase):
    """The client's login and exit rules."""

    def setUp(self):
        self.shown = []
        self.finished = defer.Deferred()
        self.client = ChatClient("bot", self.shown.append, self.finished, Clock())
        self.link = FakeLink()
        self.client.link = self.link

    def join(self):
        self.client.server_line(GREETING)
        self.client.server_line("* you are bot; 1 in #lobby: bot")

    def test_sends_name_when_greeted(self):
        self.client.server_line(GREETING)
        self.assertEqual(self.link.sent, ["bot"])
        self.assertEqual(self.shown, [GREETING])

    def test_lines_before_welcome_wait_for_it(self):
        self.client.user_line("first")
        self.client.user_line("second")
        self.client.server_line(GREETING)
        self.assertEqual(self.link.sent, ["bot"])
        self.client.server_line("* you are bot; 1 in #lobby: bot")
        self.assertEqual(self.link.sent, ["bot", "first", "second"])
        self.assertTrue(self.client.joined)

    def test_lines_after_welcome_sent_at_once(self):
        self.join()
        self.client.user_line("hi")
        self.assertEqual(self.link.sent, ["bot", "hi"])

    def test_eof_before_welcome_quits_after_queued_lines(self):
        self.client.user_line("hello")
        self.client.user_done()
        self.assertEqual(self.link.sent, [])
        self.join()
        self.assertEqual(self.link.sent, ["bot", "hello", "/quit"])
        self.assertNoResult(self.finished)

    def test_eof_after_welcome_quits(self):
        self.join()
        self.client.user_done()
        self.assertEqual(self.link.sent, ["bot", "/quit"])

    def test_lines_after_quit_dropped(self):
        self.join()
        self.client.user_done()
        self.client.user_line("too late")
        self.assertEqual(self.link.sent, ["bot", "/quit"])

    def test_refusal_before_welcome_exits_2(self):
        self.client.server_line(GREETING)
        self.client.server_line("! nickname bot is taken, try another")
        self.assertEqual(self.successResultOf(self.finished), EXIT_REFUSED)
        self.assertEqual(self.shown[-1], "! nickname bot is taken, try another")

    def test_refusal_after_welcome_is_just_shown(self):
        self.join()
        self.client.server_line("! no such user: nobody")
        self.assertNoResult(self.finished)
        self.assertEqual(self.shown[-1], "! no such user: nobody")

    def test_every_server_line_shown(self):
        self.join()
        self.client.server_line("alice: hi")
        self.assertEqual(
            self.shown, [GREETING, "* you are bot; 1 in #lobby: bot", "alice: hi"]
        )

    def test_hang_up_before_join_exits_1(self):
        self.client.server_line(GREETING)
        self.client.connection_lost()
        self.assertEqual(self.successResultOf(self.finished), EXIT_UNREACHABLE)

    def test_hang_up_after_join_exits_0(self):
        self.join()
        self.client.connection_lost()
        self.assertEqual(self.successResultOf(self.finished), EXIT_OK)

    def test_first_exit_code_wins(self):
        self.client.finish(EXIT_REFUSED)
        self.client.finish(EXIT_OK)
        self.assertEqual(self.successResultOf(self.finished), EXIT_REFUSED)


class TcpLinkTests(SynchronousTestCase):
    """The client's TCP end: CRLF or LF lines in, LF lines out."""

    def setUp(self):
        self.shown = []
        self.finished = defer.Deferred()
        self.client = ChatClient("bot", self.shown.append, self.finished, Clock())
        self.link = _TcpLink(self.client)
        self.out = StringTransport()
        self.link.makeConnection(self.out)

    def test_login_over_tcp(self):
        self.client.user_line("hello")
        self.link.dataReceived(GREETING.encode() + b"\r\n")
        self.assertEqual(self.out.value(), b"bot\n")
        self.link.dataReceived(b"* you are bot; 1 in #lobby: bot\r\n")
        self.assertEqual(self.out.value(), b"bot\nhello\n")
        self.assertEqual(self.shown, [GREETING, "* you are bot; 1 in #lobby: bot"])

    def test_utf8_both_ways(self):
        self.link.dataReceived(GREETING.encode() + b"\r\n* you are bot; 1 in #lobby: bot\r\n")
        self.out.clear()
        self.client.user_line("héllo 世界")
        self.assertEqual(self.out.value(), "héllo 世界\n".encode())
        self.link.dataReceived("alice: привет\r\n".encode())
        self.assertEqual(self.shown[-1], "alice: привет")

    def test_quit(self):
        self.link.quit()
        self.assertEqual(self.out.value(), b"/quit\n")


class ConsoleTests(SynchronousTestCase):
    """stdin lines to the client; a last line without newline still counts."""

    def setUp(self):
        self.client = ChatClient("bot", lambda line: None, defer.Deferred(), Clock())
        self.client.link = self.link = FakeLink()
        self.client.server_line(GREETING)
        self.client.server_line("* you are bot; 1 in #lobby: bot")
        self.console = _Console(self.client)
        self.console.makeConnection(StringTransport())

    def test_lines_and_eof(self):
        self.console.dataReceived(b"one\r\ntwo\n")
        self.console.readConnectionLost()
        self.assertEqual(self.link.sent, ["bot", "one", "two", "/quit"])

    def test_last_line_without_newline(self):
        self.console.dataReceived(b"one\nlast")
        self.console.readConnectionLost()
        self.assertEqual(self.link.sent, ["bot", "one", "last", "/quit"])


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_name_required(self):
        self.assertRaises(usage.UsageError, self.parse)
        self.assertRaises(usage.UsageError, self.parse, "--port", "1")

    def test_defaults(self):
        options = self.parse("--name", "bot")
        self.assertEqual(
            (options["name"], options["host"], options["port"], options["udp"]),
            ("bot", "127.0.0.1", 12345, False),
        )

    def test_udp_default_port(self):
        self.assertEqual(self.parse("--name", "bot", "--udp")["port"], 12346)

    def test_port(self):
        self.assertEqual(self.parse("-n", "bot", "-p", "4000")["port"], 4000)

    def test_bad_port(self):
        self.assertRaises(usage.UsageError, self.parse, "--name", "bot", "--port", "x")

    def test_exit_codes(self):
        self.assertEqual(
            (client.EXIT_OK, client.EXIT_UNREACHABLE, client.EXIT_REFUSED), (0, 1, 2)
        )


class ClientProcessTests(TestCase):
    """The client as a real process, against the real server on loopback."""

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.service, self.port = support.start_chat_server(reactor)
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def user(self, nick):
        """A raw TCP user who has joined as C{nick}, with its welcome read."""
        user = yield support.connect(self.reactor, self.port)
        self.addCleanup(user.close)
        return (yield support.log_in(user, nick))

    def run_client(self, *args):
        process = support.spawn(self.reactor, support.client_argv(*args))
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def test_piped_line_delivered_and_exit_0(self):
        """C{printf 'hello\\n' | chatroom-client --name bot}."""
        alice = yield self.user("alice")
        bot = self.run_client("--name", "bot", "--port", str(self.port))
        bot.transport.write(b"hello\n")
        bot.transport.closeStdin()
        self.assertEqual(
            (yield alice.read_lines(3)),
            ["* bot joined", "bot: hello", "* bot left (quit)"],
        )
        self.assertEqual((yield bot.wait_for_exit()), 0)
        self.assertEqual(
            bot.out.decode().splitlines(),
            [
                GREETING,
                "* you are bot; 2 in #lobby: alice, bot",
                "* type /help for commands",
                "* goodbye",
            ],
        )
        self.assertEqual(bot.err, b"")

    @defer.inlineCallbacks
    def test_sees_what_others_say(self):
        alice = yield self.user("alice")
        bot = self.run_client("--name", "bot", "--port", str(self.port))
        self.assertEqual((yield alice.next_line()), "* bot joined")
        alice.send("hi bot, ça va?\r\n".encode())
        yield bot.wait_for_output("alice: hi bot, ça va\\?\n".encode())
        bot.transport.closeStdin()
        self.assertEqual((yield alice.next_line()), "* bot left (quit)")
        self.assertEqual((yield bot.wait_for_exit()), 0)

    @defer.inlineCallbacks
    def test_taken_nick_exits_2(self):
        holder = yield self.user("bot")
        bot = self.run_client("--name", "bot", "--port", str(self.port))
        self.assertEqual((yield bot.wait_for_exit()), 2)
        lines = bot.out.decode().splitlines()
        self.assertEqual(lines[:2], [GREETING, "! nickname bot is taken, try another"])
        self.assertEqual(holder.unread(), [])

    @defer.inlineCallbacks
    def test_unreachable_port_exits_1(self):
        port = support.free_port()
        bot = self.run_client("--name", "bot", "--port", str(port))
        self.assertEqual((yield bot.wait_for_exit()), 1)
        self.assertEqual(bot.out, b"")
        self.assertIn(
            f"chatroom-client: cannot reach 127.0.0.1:{port}".encode(), bot.err
        )
        self.assertIn(b"refused", bot.err.lower())
