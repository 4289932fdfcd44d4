"""
chatroom-client --udp as a real process against the real service, on
loopback: joining with a session secret, chatting, a refused nick, and
leaving with BYE when stopped by a signal.
"""

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from chatservice import tap
from tests import support

#: Starting Python and Twisted for the client on a busy machine, plus the handshake.
STARTUP = 15.0


class UdpClientProcessTests(TestCase):
    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        options = tap.Options()
        options.parseOptions([
            "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
            "--history", "none",
        ])
        recorder = support.ListenRecorder(reactor)
        service = tap.makeService(options, reactor=recorder)
        service.startService()
        self.addCleanup(service.stopService)
        [tcp], [udp] = recorder.tcp_ports, recorder.udp_ports
        self.tcp_port, self.udp_port = tcp.getHost().port, udp.getHost().port

    @defer.inlineCallbacks
    def user(self, nick):
        user = yield support.connect(self.reactor, self.tcp_port)
        self.addCleanup(user.close)
        return (yield support.log_in(user, nick))

    def run_client(self, *args):
        process = support.spawn(
            self.reactor,
            support.client_argv("--udp", "--port", str(self.udp_port), *args),
        )
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def test_piped_line_delivered_and_exit_0(self):
        alice = yield self.user("alice")
        bot = self.run_client("--name", "bot")
        bot.transport.write("hello, ça va\n".encode())
        bot.transport.closeStdin()
        self.assertEqual(
            (yield alice.read_lines(3, timeout=STARTUP)),
            ["* bot joined", "bot: hello, ça va", "* bot left (quit)"],
        )
        self.assertEqual((yield bot.wait_for_exit()), 0)
        self.assertEqual(
            bot.out.decode().splitlines(),
            ["* you are bot; 2 in #lobby: alice, bot", "* type /help for commands", "* goodbye"],
        )
        self.assertEqual(bot.err, b"")

    @defer.inlineCallbacks
    def test_taken_nick_exits_2_with_the_refusal_alone(self):
        holder = yield self.user("bot")
        bot = self.run_client("--name", "bot")
        self.assertEqual((yield bot.wait_for_exit(STARTUP)), 2)
        self.assertEqual(bot.out.decode(), "! nickname bot is taken, try another\n")
        self.assertEqual(bot.err, b"")
        holder.send(b"/who\n")
        self.assertEqual((yield holder.next_line()), "* 1 in #lobby: bot (tcp)")

    @defer.inlineCallbacks
    def test_stopped_client_says_bye_and_leaves_at_once(self):
        """SIGTERM (as Ctrl-C): the others see a quit now, not a timeout a minute later."""
        alice = yield self.user("alice")
        bot = self.run_client("--name", "bot")
        self.assertEqual((yield alice.next_line(STARTUP)), "* bot joined")
        yield bot.wait_for_output(rb"\* type /help for commands\n")
        bot.transport.signalProcess("TERM")
        self.assertEqual((yield alice.next_line()), "* bot left (quit)")
        self.assertEqual((yield bot.wait_for_exit()), 0)
        self.assertNotIn(b"Traceback", bot.output)
