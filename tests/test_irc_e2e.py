"""
End to end with the real Debian C{irssi}, typed at in a tmux pane, beside an nc-style user.

A real server (the service from C{tap.makeService}, IRC and TCP on, on trial's reactor)
serves irssi running in a detached tmux session with a home folder of its own, and a raw
TCP user (L{support.LineClient}, what nc is).  irssi connects (it negotiates CAP first, as
it does with every server), joins C{#lobby}, and the two chat both ways; then C{/msg},
C{/nick} and C{/quit}.  Every wait polls the pane or the TCP user's lines with a bounded
timeout; nothing sleeps.  C{make test} installs irssi and tmux (its C{test-programs} target).
"""

import os
import shutil
import tempfile

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from tests import support

POLL_INTERVAL = 0.05


class RealIrssiTests(TestCase):
    """Debian's irssi, driven through tmux as a person would use it."""

    timeout = 120

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        for program in ("irssi", "tmux"):
            if shutil.which(program) is None:
                self.fail(f"{program} is not installed; `make test-programs` installs it")
        self.service, self.tcp_port, self.irc_port = support.start_chat_server_with_irc(
            reactor, "--server-name", "chat.test")
        self.addCleanup(self.service.stopService)
        self.home = tempfile.mkdtemp(prefix="chatroom-irssi-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.tmux = support.Tmux(reactor, self.home, session="irc")
        self.screens = []

    def type_line(self, text):
        return self.tmux.type_line(text)

    @defer.inlineCallbacks
    def wait_for_pane(self, text, timeout=20.0):
        """Poll the pane until C{text} shows, for at most C{timeout} seconds."""
        deadline = self.reactor.seconds() + timeout
        while True:
            screen = yield self.tmux.pane()
            if text in screen:
                self.screens.append(screen)
                return screen
            if self.reactor.seconds() >= deadline:
                raise support.WaitTimedOut(
                    f"waited {timeout}s in vain for {text!r}; the pane shows:\n{screen.rstrip()}")
            yield task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)

    @defer.inlineCallbacks
    def test_irssi_chats_with_an_nc_user(self):
        """irssi registers, joins #lobby, and chats, /msg, /nick and /quit reach the nc user."""
        self.addCleanup(self.tmux.kill)
        config = os.path.join(self.home, "config")
        with open(config, "w") as f:  # no default networks, no autoconnects, plain theme
            f.write('settings = { core = { real_name = "Alice"; user_name = "alice"; '
                    'nick = "alice"; }; "fe-common/core" = { theme = "default"; }; };\n')
        yield self.tmux.start(
            f"irssi --home={self.home} --config={config} -n alice "
            f"-c 127.0.0.1 -p {self.irc_port}", width=160)
        yield self.wait_for_pane("Welcome to the chatroom IRC network, alice")

        bob = yield support.connect(self.reactor, self.tcp_port)
        yield support.log_in(bob, "bob")
        yield self.type_line("/join #lobby")
        yield self.wait_for_pane("alice [chat@chat.test] has joined #lobby")
        yield bob.read_until("* alice joined")

        bob.send(b"hello from nc\n")
        yield self.wait_for_pane("bob> hello from nc")  # irssi pads nicks: "< bob>"
        yield self.type_line("hi bob, irssi here")
        yield bob.read_until("alice: hi bob, irssi here")

        yield self.type_line("/msg bob just for you")
        yield bob.read_until("[private] alice: just for you")
        bob.send(b"/msg alice and back\n")
        yield self.wait_for_pane("Act:")  # irssi opens a query window for it, in the background
        yield self.type_line("/query bob")
        yield self.wait_for_pane("bob> and back")
        yield self.type_line("/window goto #lobby")
        yield self.wait_for_pane("hi bob, irssi here")

        yield self.type_line("/nick alicia")
        yield self.wait_for_pane("You're now known as alicia")
        yield bob.read_until("* alice is now known as alicia")

        yield self.type_line("/quit see you")
        yield bob.read_until("* alicia left (Quit: see you)")
        screen = yield self.tmux.pane()
        self.screens.append(screen)
        yield bob.close()
        keep = os.environ.get("CHATROOM_IRSSI_SCREENS")
        if keep:  # what irssi showed, for people reading about this test
            with open(keep, "w") as f:
                f.write("\n----\n".join(s.rstrip() for s in self.screens) + "\n")
