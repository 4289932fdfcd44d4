"""
Integration: the real service (from C{tap.makeService}) on 127.0.0.1 port 0,
and raw TCP users talking to it as nc (LF) and telnet (CRLF) would.

Every wait is on an event with a bound (L{tests.support.WAIT}); every
connection and the listening port are closed in cleanup, so trial sees a
clean reactor.
"""

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests import support

GREETING = "* welcome to chatroom, what is your nickname?"


class _LoopbackHarness(TestCase):
    """Starts the service; connects raw users to it."""

    timeout = 60

    extra_options: tuple = ()

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.service, self.port = support.start_chat_server(reactor, *self.extra_options)
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def open(self):
        """A raw connection, greeted, no nick yet."""
        user = yield support.connect(self.reactor, self.port)
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), GREETING)
        return user

    @defer.inlineCallbacks
    def join(self, nick, line_end=b"\n"):
        """A user who joined as C{nick}; returns it and its welcome lines."""
        user = yield self.open()
        user.send(nick.encode() + line_end)
        welcome = yield user.read_until("* type /help for commands")
        return user, welcome


class LoopbackChatTests(_LoopbackHarness):
    """nc and telnet users chatting through the real service."""

    @defer.inlineCallbacks
    def test_nc_and_telnet_users_chat(self):
        nc, welcome = yield self.join("alice", b"\n")
        self.assertEqual(
            welcome, ["* you are alice; 1 in #lobby: alice", "* type /help for commands"]
        )
        telnet, welcome = yield self.join("bob", b"\r\n")
        self.assertEqual(
            welcome, ["* you are bob; 2 in #lobby: alice, bob", "* type /help for commands"]
        )
        self.assertEqual((yield nc.next_line()), "* bob joined")

        nc.send(b"hello from nc\n")
        self.assertEqual((yield telnet.next_line()), "alice: hello from nc")
        telnet.send("hello from telnet, 世界\r\n".encode())
        self.assertEqual((yield nc.next_line()), "bob: hello from telnet, 世界")

        nc.send(b"/msg bob just for you\n")
        self.assertEqual((yield telnet.next_line()), "[private] alice: just for you")
        self.assertEqual((yield nc.next_line()), "-> bob: just for you")
        telnet.send(b"/me nods\r\n")
        self.assertEqual((yield nc.next_line()), "* bob nods")
        telnet.send(b"/who\r\n")
        self.assertEqual((yield telnet.next_line()), "* 2 in #lobby: alice (tcp), bob (tcp)")

        nc.send(b"/nick alicia\n")
        self.assertEqual((yield nc.next_line()), "* alice is now known as alicia")
        self.assertEqual((yield telnet.next_line()), "* alice is now known as alicia")
        telnet.send(b"/msg Alicia still there?\r\n")
        self.assertEqual((yield nc.next_line()), "[private] bob: still there?")
        self.assertEqual((yield telnet.next_line()), "-> alicia: still there?")

        nc.send(b"/quit see you\n")
        self.assertEqual((yield nc.next_line()), "* goodbye")
        yield nc.wait_closed()
        self.assertEqual(nc.unread(), [])
        self.assertEqual((yield telnet.next_line()), "* alicia left (see you)")
        # Neither saw its own lines echoed back.
        self.assertNotIn("alice: hello from nc", nc.lines)
        self.assertNotIn("bob: hello from telnet, 世界", telnet.lines)
        # Every line the server sent ended with CRLF.
        for user in (nc, telnet):
            self.assertEqual(user.raw.count(b"\n"), user.raw.count(b"\r\n"))

    @defer.inlineCallbacks
    def test_leaving_never_disturbs_the_others(self):
        alice, _ = yield self.join("alice")
        bob, _ = yield self.join("bob", b"\r\n")
        carol, _ = yield self.join("carol")
        yield alice.read_until("* carol joined")
        yield bob.read_until("* carol joined")

        # carol vanishes without a word (RST), mid-line.
        carol.send(b"half a li")
        yield carol.abort()
        self.assertEqual((yield alice.next_line()), "* carol left (connection lost)")
        self.assertEqual((yield bob.next_line()), "* carol left (connection lost)")

        # dave connects and hangs up before choosing a nick: nobody hears of it.
        dave = yield self.open()
        yield dave.close()

        alice.send(b"still here?\n")
        self.assertEqual((yield bob.next_line()), "alice: still here?")
        bob.send(b"yes\r\n")
        self.assertEqual((yield alice.next_line()), "bob: yes")

        # bob quits politely; alice keeps going, and a newcomer may take "carol".
        bob.send(b"/quit\r\n")
        self.assertEqual((yield alice.next_line()), "* bob left (quit)")
        carol2, welcome = yield self.join("carol")
        self.assertEqual(welcome[0], "* you are carol; 2 in #lobby: alice, carol")
        self.assertEqual((yield alice.next_line()), "* carol joined")
        alice.send(b"welcome back\n")
        self.assertEqual((yield carol2.next_line()), "alice: welcome back")

    @defer.inlineCallbacks
    def test_taken_nick_asked_again_over_the_wire(self):
        alice, _ = yield self.join("alice")
        other = yield self.open()
        other.send(b"Alice\r\n")
        self.assertEqual(
            (yield other.read_lines(2)),
            ["! nickname Alice is taken, try another", "* what is your nickname?"],
        )
        other.send(b"alice2\r\n")
        self.assertEqual(
            (yield other.next_line()), "* you are alice2; 2 in #lobby: alice, alice2"
        )
        self.assertEqual((yield alice.next_line()), "* alice2 joined")

    @defer.inlineCallbacks
    def test_telnet_negotiation_stripped(self):
        alice, _ = yield self.join("alice")
        telnet = yield self.open()
        telnet.send(b"\xff\xfd\x03\xff\xfb\x18\xff\xfa\x18\x01\xff\xf0bob\r\n")
        # DO SUPPRESS-GO-AHEAD and WILL TERMINAL-TYPE are refused (WONT, DONT) before the welcome.
        self.assertEqual(
            (yield telnet.next_line()),
            "\\xff\\xfc\x03\\xff\\xfe\x18* you are bob; 2 in #lobby: alice, bob",
        )
        self.assertEqual((yield alice.next_line()), "* bob joined")
        telnet.send(b"\xff\xfb\x01hi\r\n")
        self.assertEqual((yield alice.next_line()), "bob: hi")

    @defer.inlineCallbacks
    def test_stop_says_goodbye_to_everyone(self):
        alice, _ = yield self.join("alice")
        waiting = yield self.open()
        yield self.service.stopService()
        self.assertEqual((yield alice.read_until("* server shutting down"))[-1:],
                         ["* server shutting down"])
        self.assertEqual((yield waiting.next_line()), "* server shutting down")
        yield alice.wait_closed()
        yield waiting.wait_closed()


class LongLineLoopbackTests(_LoopbackHarness):
    """The line limit over a real socket, set with --max-line."""

    extra_options = ("--max-line", "100")

    @defer.inlineCallbacks
    def test_long_line_refused_and_rest_of_chunk_kept(self):
        alice, _ = yield self.join("alice")
        bob, _ = yield self.join("bob")
        yield alice.read_until("* bob joined")
        bob.send(b"x" * 5000 + b"\nafter the long one\r\n")
        self.assertEqual((yield bob.next_line()), "! line too long (max 100 bytes)")
        self.assertEqual((yield alice.next_line()), "bob: after the long one")
        bob.send(b"y" * 100 + b"\n")
        self.assertEqual((yield alice.next_line()), "bob: " + "y" * 100)
