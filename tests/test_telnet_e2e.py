"""
End to end with the real Debian C{telnet} program, typed at in a tmux pane.

The issue: when a telnet user presses Ctrl-C, telnet sends
C{IAC IP IAC DO TIMING-MARK} and throws away everything the server sends until
the server answers the timing mark.  A server that never answers leaves that
user seeing nothing, for good, while the others still see their lines.

Here a real server (the service from C{tap.makeService}, on trial's reactor)
serves a real C{telnet} running in a detached tmux session, and a raw TCP user
(L{support.LineClient}).  A small recording proxy sits between telnet and the
server, so the test can check which bytes telnet really sent on Ctrl-C and
what the server answered.  Every wait polls the pane or the capture with a
bounded timeout; nothing sleeps.  C{make test} installs telnet and tmux
(its C{test-programs} target).
"""

import shutil
import tempfile

from twisted.internet import defer, task
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from tests import support

#: What Debian's telnet sends on Ctrl-C: IAC IP, then IAC DO TIMING-MARK.
CTRL_C = b"\xff\xf4\xff\xfd\x06"
#: The answer that ends telnet's discarding: IAC WILL TIMING-MARK.
TIMING_MARK_ANSWER = b"\xff\xfb\x06"
GREETING = "* welcome to chatroom, what is your nickname?"
#: Seconds between two looks at the pane or the capture while waiting.
POLL_INTERVAL = 0.05


class _RecordingProxyClient(portforward.ProxyClient):
    """The proxy's connection to the server: records what the server sends."""

    noisy = False

    def dataReceived(self, data):
        self.peer.factory.down += data
        portforward.ProxyClient.dataReceived(self, data)


class _RecordingProxyClientFactory(portforward.ProxyClientFactory):
    noisy = False
    protocol = _RecordingProxyClient


class _RecordingProxyServer(portforward.ProxyServer):
    """The proxy's side towards telnet: records what telnet sends."""

    noisy = False
    clientProtocolFactory = _RecordingProxyClientFactory

    def connectionMade(self):
        self.factory.open += 1
        portforward.ProxyServer.connectionMade(self)

    def dataReceived(self, data):
        self.factory.up += data
        portforward.ProxyServer.dataReceived(self, data)

    def connectionLost(self, reason):
        self.factory.open -= 1
        portforward.ProxyServer.connectionLost(self, reason)


class RecordingProxy(portforward.ProxyFactory):
    """
    A TCP forwarder to the chat server that keeps every byte, both ways.

    @ivar up: what the client (telnet) sent.
    @ivar down: what the server sent back.
    @ivar open: client connections not yet closed.
    """

    noisy = False
    protocol = _RecordingProxyServer

    def __init__(self, host, port):
        portforward.ProxyFactory.__init__(self, host, port)
        self.up = b""
        self.down = b""
        self.open = 0


class RealTelnetTests(TestCase):
    """Debian's telnet, driven through tmux as a person would use it."""

    timeout = 90

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        for program in ("telnet", "tmux"):
            if shutil.which(program) is None:
                self.fail(f"{program} is not installed; `make test-programs` installs it")
        self.service, self.server_port = support.start_chat_server(reactor)
        self.addCleanup(self.service.stopService)
        self.proxy = RecordingProxy("127.0.0.1", self.server_port)
        listening = reactor.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(self.wait_for, lambda: self.proxy.open == 0, "the proxy to close")
        self.proxy_port = listening.getHost().port
        # A tmux server of our own: its own socket directory and name, no user config.
        self.tmux_dir = tempfile.mkdtemp(prefix="chatroom-tmux-")
        self.addCleanup(shutil.rmtree, self.tmux_dir, True)
        self.tmux = support.Tmux(reactor, self.tmux_dir)

    # -- helpers -------------------------------------------------------------

    @defer.inlineCallbacks
    def start_telnet(self):
        """Run telnet to the proxy in a detached 200x50 pane; fire once it shows the greeting."""
        self.addCleanup(self.tmux.kill)
        yield self.tmux.start(f"telnet 127.0.0.1 {self.proxy_port}")
        yield self.wait_for_pane(GREETING)

    def pane(self):
        """The telnet pane's text as it is now."""
        return self.tmux.pane()

    def type_line(self, text):
        """Type C{text} and Enter into the telnet pane."""
        return self.tmux.type_line(text)

    def press_ctrl_c(self):
        return self.tmux.press("C-c")

    @defer.inlineCallbacks
    def wait_for(self, check, what, timeout=support.WAIT, describe=None):
        """
        Poll C{check} (which may return a Deferred) until it is true, for at most C{timeout}.

        @param describe: called on timeout (may return a Deferred); its text goes in the failure.
        """
        deadline = self.reactor.seconds() + timeout
        while True:
            if (yield defer.maybeDeferred(check)):
                return
            if self.reactor.seconds() >= deadline:
                seen = (yield defer.maybeDeferred(describe)) if describe else ""
                raise support.WaitTimedOut(f"waited {timeout}s in vain for {what}; {seen}")
            yield task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)

    def wait_for_pane(self, text):
        """Wait until C{text} shows in the telnet pane."""

        def shown():
            return self.pane().addCallback(lambda screen: text in screen)

        def describe():
            return self.pane().addCallback(
                lambda screen: f"the pane shows:\n{screen.rstrip()}\n"
                f"telnet sent {self.proxy.up!r}; the server sent {self.proxy.down!r}"
            )

        return self.wait_for(shown, f"{text!r} in the telnet pane", describe=describe)

    def wait_for_ctrl_c(self, count):
        """Wait until telnet has sent C{count} Ctrl-C sequences, exactly as the issue says."""
        return self.wait_for(
            lambda: self.proxy.up.count(CTRL_C) == count,
            f"telnet to send IAC IP IAC DO TIMING-MARK (#{count})",
            describe=lambda: f"telnet sent {self.proxy.up!r}",
        )

    @defer.inlineCallbacks
    def join(self, nick):
        user = yield support.connect(self.reactor, self.server_port)
        self.addCleanup(user.close)
        self.assertEqual((yield user.next_line()), GREETING)
        user.send(nick.encode() + b"\n")
        yield user.read_until("* type /help for commands")
        return user

    # -- the tests -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_after_ctrl_c_the_telnet_user_still_sees_and_sends_lines(self):
        alice = yield self.join("alice")
        yield self.start_telnet()
        yield self.type_line("bob")
        yield alice.read_until("* bob joined")
        alice.send(b"before ctrl-c\n")
        yield self.wait_for_pane("alice: before ctrl-c")

        for round_, (typed, said) in enumerate(
            [("still typing", "after ctrl-c"), ("again", "after the second ctrl-c")], 1
        ):
            yield self.press_ctrl_c()
            yield self.wait_for_ctrl_c(round_)
            # bob's line follows the Ctrl-C on his connection, so the server has read the
            # Ctrl-C once alice has bob's line; only then does alice speak.
            yield self.type_line(typed)
            self.assertEqual((yield alice.read_until(f"bob: {typed}"))[-1], f"bob: {typed}")
            alice.send(said.encode() + b"\n")
            yield self.wait_for_pane(f"alice: {said}")

        # The server answered each timing mark, and sent telnet nothing else of the kind.
        self.assertEqual(self.proxy.down.count(TIMING_MARK_ANSWER), 2)
        self.assertEqual(self.proxy.down.count(b"\xff"), 2)
        self.assertEqual(alice.unread(), [])
