"""
The C{nc -u} walkthrough in docs/udp-protocol.md, replayed against the real service over loopback.

The test reads the transcript from the document itself, so the document cannot go stale: every
C{>} line is sent as C{nc -u} sends it (the text and a newline, one datagram), and every C{<} line
must be the next datagram the server sends.  The example token and secret in the document are
replaced by the ones the server hands out.  bob, a TCP user, is online first and types each
C{bob: ...} line (C{[#lobby] bob: ...} once alice's current room is another) just before alice is
to receive it.  The service keeps no history (C{--history none}), as a fresh server would show.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice import tap
from tests import support

DOC = os.path.join(support.PROJECT_ROOT, "docs", "udp-protocol.md")
SECTION = "## By hand with `nc -u`"
#: A numbered line the server sent before (after the session secret); a copy is a
#: retransmission, which the doc leaves out.
_DATA = re.compile(rb"[0-9a-f]{16} \d+\+? ")


def walkthrough(text: str) -> list[tuple[str, str]]:
    """The (direction, line) steps of the first ``` block after L{SECTION}; C{$} lines skipped."""
    after = text.split(SECTION, 1)[1]
    block = after.split("```\n", 2)[1]
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            continue
        direction, space, rest = line.partition(" ")
        if direction not in (">", "<") or not space:
            raise ValueError(f"not a walkthrough line: {line!r}")
        steps.append((direction, rest))
    return steps


class WalkthroughParsingTests(SynchronousTestCase):
    """The transcript parses, and it shows what the protocol promises."""

    def test_document_has_the_walkthrough(self):
        with open(DOC, encoding="utf-8") as f:
            steps = walkthrough(f.read())
        said = [line for direction, line in steps if direction == "<"]
        self.assertEqual(said[0].split()[0], "TOKEN")
        self.assertIn("! nickname bob is taken, try another", said)
        self.assertTrue(any(re.fullmatch(r"SESSION [0-9a-f]{16}", line) for line in said))
        secret = next(line.split()[1] for line in said if line.startswith("SESSION "))
        after = said[said.index("SESSION " + secret) + 1:]
        self.assertTrue(all(line.startswith(secret + " ") for line in after), after)
        self.assertEqual(said[-1], secret + " BYE")
        self.assertTrue(after[0].startswith(secret + " 1 * you are alice; 2 in #lobby: "), after)
        typed = [line for direction, line in steps if direction == ">"]
        self.assertTrue(any(line.endswith(" /join #dev") for line in typed), typed)
        self.assertTrue(any(re.fullmatch(r"[0-9a-f]{16} \d+ \[#lobby\] bob: .+", line)
                            for line in said), said)


class NcClient(DatagramProtocol):
    """What C{nc -u} does: one datagram per typed line; every datagram received, in order."""

    def __init__(self, reactor, server) -> None:
        self._reactor = reactor
        self._server = server
        self.received: list[bytes] = []
        self._read = 0
        self._waiter: defer.Deferred | None = None

    def startProtocol(self) -> None:
        self.transport.connect(*self._server)

    def type_line(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\n")

    def datagramReceived(self, datagram: bytes, address) -> None:
        self.received.append(datagram)
        if self._waiter is not None:
            datagram = self._take()
            if datagram is not None:
                waiter, self._waiter = self._waiter, None
                waiter.callback(datagram)

    def _take(self) -> bytes | None:
        """The next datagram not read yet, skipping copies of numbered lines already read."""
        while self._read < len(self.received):
            datagram = self.received[self._read]
            self._read += 1
            if _DATA.match(datagram) and datagram in self.received[: self._read - 1]:
                continue
            return datagram
        return None

    def next_datagram(self, timeout: float = support.WAIT) -> defer.Deferred:
        """Fire with the next datagram (see L{_take}); fail if none comes within C{timeout}."""
        datagram = self._take()
        if datagram is not None:
            return defer.succeed(datagram)

        def forget(_):
            self._waiter = None

        self._waiter = defer.Deferred(forget)
        self._waiter.addTimeout(timeout, self._reactor)
        return self._waiter


class WalkthroughTests(TestCase):
    """docs/udp-protocol.md's session, typed against the real service over loopback."""

    timeout = 60

    @defer.inlineCallbacks
    def test_walkthrough_matches_the_server(self):
        from twisted.internet import reactor

        with open(DOC, encoding="utf-8") as f:
            steps = walkthrough(f.read())
        doc_token = next(line.split()[1] for d, line in steps if line.startswith("TOKEN "))
        doc_secret = next(line.split()[1] for d, line in steps if line.startswith("SESSION "))

        options = tap.Options()
        options.parseOptions(
            ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "udp:0:interface=127.0.0.1", "--irc", "off", "--web", "off",
             "--history", "none"]
        )
        recorder = support.ListenRecorder(reactor)
        service = tap.makeService(options, reactor=recorder)
        yield defer.maybeDeferred(service.startService)
        self.addCleanup(service.stopService)
        [tcp_port] = recorder.tcp_ports
        [udp_port] = recorder.udp_ports
        chat = udp_port.protocol

        bob = yield support.connect(reactor, tcp_port.getHost().port)
        self.addCleanup(bob.close)
        yield bob.next_line()
        bob.send(b"bob\n")
        yield bob.read_until("* type /help for commands")

        alice = NcClient(reactor, ("127.0.0.1", udp_port.getHost().port))
        alice_port = reactor.listenUDP(0, alice, interface="127.0.0.1")
        self.addCleanup(alice_port.stopListening)

        real = {}

        def fill_in(line: str) -> str:
            if "token" in real:
                line = line.replace(doc_token, real["token"])
            if "secret" in real:
                line = line.replace(doc_secret, real["secret"])
            return line

        for direction, line in steps:
            if direction == ">":
                alice.type_line(fill_in(line))
                continue
            bob_says = re.fullmatch(r"[0-9a-f]{16} \d+ (?:\[#lobby\] )?bob: (.*)", line)
            if bob_says:
                bob.send(bob_says.group(1).encode("utf-8") + b"\n")
            got = (yield alice.next_datagram()).decode("utf-8")
            self.assertTrue(got.endswith("\n"), got)
            got = got[:-1]
            for verb, key in (("TOKEN", "token"), ("SESSION", "secret")):
                if line.startswith(verb + " ") and got.startswith(verb + " "):
                    real[key] = got.split()[1]
            self.assertEqual(got, fill_in(line))

        self.assertEqual(len(real["secret"]), 16)
        seen_by_bob = yield bob.read_until("* alice left (quit)")
        self.assertEqual(
            seen_by_bob,
            ["* alice joined", "alice: hello everyone", "[private] alice: see you",
             "* alice left (quit)"],
        )
        self.assertEqual(chat.peers(), [])
