"""
The web front-end over loopback: the real service (C{tap.makeService}) with its web
listener on 127.0.0.1 port 0, WebSocket users made with autobahn's own Twisted client,
and raw TCP line users (L{support.LineClient}) in the same rooms.  Every wait is
bounded; nothing sleeps.
"""

import json
import os
import shutil
import tempfile

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, endpoints
from twisted.trial.unittest import TestCase
from twisted.web import client as web_client
from twisted.web.server import Site

from chatservice import tap
from chatservice.core.limits import Limits
from chatservice.frontends import web
from tests import support


class WebUser(WebSocketClientProtocol):
    """
    A WebSocket chat user, as a page is: JSON objects out, JSON objects in.

    @ivar messages: every message received, decoded.
    @ivar closed: (code, reason) once the WebSocket closed.
    """

    def __init__(self):
        super().__init__()
        self.messages: list = []
        self.closed = None
        self._read = 0

    def onConnect(self, response):
        self._waiters = support.Waiters(self.factory.clock)

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.messages.append(json.loads(payload))
        self._waiters.changed()

    def onClose(self, wasClean, code, reason):
        self.closed = (code, reason)
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        else:
            self._waiters.changed()

    def send(self, **message):
        self.sendMessage(json.dumps(message).encode())

    def _describe(self):
        return f"unread: {self.messages[self._read:]!r}; closed: {self.closed}"

    def next_of(self, kind, timeout=support.WAIT):
        """Fire with the next unread message of type C{kind}; those before it are read too."""

        def check():
            for index in range(self._read, len(self.messages)):
                if self.messages[index]["type"] == kind:
                    self._read = index + 1
                    return self.messages[index]
            return None

        return self._waiters.wait(check, timeout, lambda: f"looking for {kind}; "
                                  + self._describe())

    def read_until(self, kind, timeout=support.WAIT):
        """Fire with the unread messages up to and including the next of type C{kind}."""
        start = self._read
        d = self.next_of(kind, timeout)
        return d.addCallback(lambda _: self.messages[start:self._read])

    def wait_closed(self, timeout=support.WAIT):
        return self._waiters.wait(lambda: self.closed, timeout, self._describe)


class WebHarness(TestCase):
    """The service with TCP and web listeners on loopback; web and line users for it."""

    timeout = 60
    options: tuple = ()

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.folder = tempfile.mkdtemp(prefix="chatroom-web-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.addCleanup(self.cancel_autobahn_buckets)
        self.start_service()

    def cancel_autobahn_buckets(self):
        """
        autobahn times its handshakes and pings in shared buckets (txaio's batched
        timer); a cancelled timeout leaves its bucket's call waiting up to its
        end.  They would do nothing once our connections are gone: cancel them.
        """
        for call in self.reactor.getDelayedCalls():
            if getattr(call.func, "__name__", "") == "_notify_bucket" and call.active():
                call.cancel()

    def start_service(self, *extra):
        options = tap.Options()
        argv = ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off", "--irc", "off",
                "--web", "tcp:0:interface=127.0.0.1", *self.options, *extra]
        if "--history" not in argv:
            argv += ["--history", os.path.join(self.folder, "history.sqlite3")]
        options.parseOptions(argv)
        recorder = support.ListenRecorder(self.reactor)
        self.service = tap.makeService(options, reactor=recorder)
        self.service.startService()
        self.addCleanup(self.stop_service)
        ports = {isinstance(port.factory, Site): port.getHost().port
                 for port in recorder.tcp_ports}
        self.web_port, self.tcp_port = ports[True], ports[False]

    def stop_service(self):
        if self.service.running:
            return self.service.stopService()
        return None

    @defer.inlineCallbacks
    def connect(self, origin=None, headers=None):
        """A WebSocket to /ws; fires with the open L{WebUser} (fails if refused)."""
        url = f"ws://127.0.0.1:{self.web_port}/ws"
        factory = WebSocketClientFactory(url, origin=origin, headers=headers)
        factory.protocol = WebUser
        factory.clock = self.reactor
        factory.opened = defer.Deferred()
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.web_port)
        user = yield endpoint.connect(factory)
        self.addCleanup(self.hang_up, user)
        yield factory.opened.addTimeout(support.WAIT, self.reactor)
        return user

    def hang_up(self, user):
        if user.closed is None:
            user.transport.loseConnection()
            return user.wait_closed()
        return None

    @defer.inlineCallbacks
    def web_user(self, nick, **hello):
        """A WebSocket user logged in as C{nick}; fires once its rooms are joined."""
        user = yield self.connect()
        user.send(type="hello", nick=nick, **hello)
        yield user.next_of("registered")
        for _ in hello.get("rooms") or ["#lobby"]:
            yield user.next_of("room-joined")
        return user

    def line_user(self, nick):
        """A raw TCP line user, logged in as C{nick} (in #lobby)."""
        return support.line_user(self, self.reactor, self.tcp_port, nick)


class WebChatTests(WebHarness):
    """Every kind of message, with line users in the same rooms."""

    @defer.inlineCallbacks
    def test_a_web_user_and_a_line_user_chat_in_the_lobby(self):
        alice = yield self.line_user("alice")
        bob = yield self.web_user("bob")
        self.assertEqual((yield alice.next_line()), "* bob joined")
        bob.send(type="say", room="#lobby", text="hello from the web")
        self.assertEqual((yield alice.next_line()), "bob: hello from the web")
        echo = yield bob.next_of("said")  # a page sees its own line, numbered
        self.assertEqual((echo["nick"], echo["room"], echo["text"]),
                         ("bob", "#lobby", "hello from the web"))
        self.assertIsInstance(echo["id"], str)
        self.assertTrue(echo["id"].isdigit())
        self.assertIsInstance(echo["time"], float)
        alice.send(b"hi bob\n")
        heard = yield bob.next_of("said")
        self.assertEqual((heard["nick"], heard["text"]), ("alice", "hi bob"))
        self.assertGreater(int(heard["id"]), int(echo["id"]))

    @defer.inlineCallbacks
    def test_every_command(self):
        alice = yield self.line_user("alice")
        bob = yield self.web_user("bob")
        yield alice.next_line()
        bob.send(type="me", room="#lobby", text="waves")
        self.assertEqual((yield alice.next_line()), "* bob waves")
        bob.send(type="msg", nick="alice", text="psst")
        self.assertEqual((yield alice.next_line()), "[private] bob: psst")
        sent = yield bob.next_of("private-sent")
        self.assertEqual((sent["recipient"], sent["text"]), ("alice", "psst"))
        alice.send(b"/msg bob back\n")
        yield alice.read_until("-> bob: back")
        private = yield bob.next_of("private")
        self.assertEqual((private["sender"], private["text"]), ("alice", "back"))
        bob.send(type="join", room="#dev")
        joined = yield bob.next_of("room-joined")
        self.assertEqual((joined["room"], joined["members"]), ("#dev", ["bob"]))
        bob.send(type="topic", room="#dev", text="release friday")
        topic = yield bob.next_of("topic-changed")
        self.assertEqual((topic["room"], topic["text"]), ("#dev", "release friday"))
        bob.send(type="topic", room="#dev")
        self.assertEqual((yield bob.next_of("topic-is"))["text"], "release friday")
        bob.send(type="rooms")
        rooms = yield bob.next_of("room-list")
        self.assertEqual([room[0] for room in rooms["rooms"]], ["#dev", "#lobby"])
        bob.send(type="who", room="#lobby")
        who = yield bob.next_of("who-list")
        self.assertEqual(who["members"], [["alice", "tcp"], ["bob", "web"]])
        bob.send(type="history", room="#lobby", count=5)
        framed = yield bob.read_until("history-end")
        lines = [m["event"]["text"] for m in framed if m["type"] == "replayed"]
        self.assertEqual(lines, ["waves"])
        bob.send(type="part", room="#dev", reason="lunch")
        parted = yield bob.next_of("room-parted")
        self.assertEqual((parted["room"], parted["current"]), ("#dev", "#lobby"))
        bob.send(type="nick", nick="robert")
        self.assertEqual((yield alice.next_line()), "* bob is now known as robert")
        renamed = yield bob.next_of("renamed")
        self.assertEqual((renamed["old"], renamed["new"]), ("bob", "robert"))
        bob.send(type="quit", reason="bye")
        self.assertEqual((yield alice.next_line()), "* robert left (bye)")
        code, _ = yield bob.wait_closed()
        self.assertEqual(code, 1000)

    @defer.inlineCallbacks
    def test_a_taken_nick_is_refused_and_another_may_follow(self):
        yield self.line_user("alice")
        bob = yield self.connect()
        bob.send(type="hello", nick="Alice")
        refusal = yield bob.next_of("refusal")
        self.assertEqual((refusal["kind"], refusal["subject"]), ("nick-in-use", "Alice"))
        bob.send(type="hello", nick="bob")
        self.assertEqual((yield bob.next_of("registered"))["nick"], "bob")
        self.assertEqual((yield bob.next_of("room-joined"))["room"], "#lobby")

    @defer.inlineCallbacks
    def test_history_before_an_id_for_scrolling_up(self):
        alice = yield self.line_user("alice")
        for n in range(5):
            alice.send(f"line {n}\n".encode())
        bob = yield self.web_user("bob")
        framed = yield bob.read_until("history-end")
        replayed = [m["event"] for m in framed if m["type"] == "replayed"]
        self.assertEqual([e["text"] for e in replayed], [f"line {n}" for n in range(5)])
        bob.send(type="history", room="#lobby", count=2, before=replayed[2]["id"])
        framed = yield bob.read_until("history-end")
        self.assertEqual([m["event"]["text"] for m in framed if m["type"] == "replayed"],
                         ["line 0", "line 1"])


class WebResumeTests(WebHarness):
    """A page that reconnects names the last id it saw per room and misses nothing."""

    @defer.inlineCallbacks
    def test_reconnect_gets_what_it_missed_once_then_live_lines(self):
        alice = yield self.line_user("alice")
        bob = yield self.web_user("bob", rooms={"#lobby": None, "#dev": None})
        alice.send(b"before\n")
        last = yield bob.next_of("said")
        bob.transport.loseConnection()  # the network drops
        yield bob.wait_closed()
        yield alice.read_until("* bob left (connection lost)")
        for n in range(3):
            alice.send(f"missed {n}\n".encode())
        alice.send(b"/join #dev\nmissed in dev\n")
        yield alice.read_until("* you joined #dev; 1 here: alice")
        again = yield self.web_user("bob", rooms={"#lobby": last["id"], "#dev": None})
        ends = set()
        while len(ends) < 2:
            ends.add((yield again.next_of("history-end"))["room"])
        alice.send(b"/join #lobby\nlive\n")
        live = yield again.next_of("said")
        seen = [m for m in again.messages if m["type"] == "replayed"]
        lobby = [m["event"]["text"] for m in seen if m["event"]["room"] == "#lobby"]
        self.assertEqual(lobby, ["missed 0", "missed 1", "missed 2"])
        dev = [m["event"]["text"] for m in seen if m["event"]["room"] == "#dev"]
        self.assertEqual(dev, ["missed in dev"])
        self.assertEqual((live["text"], live["room"]), ("live", "#lobby"))
        self.assertNotIn("before", [m["event"]["text"] for m in seen])


class WebLimitTests(WebHarness):
    """Bad input gets a refusal and the connection stays; limits as on every transport."""

    options = ("--max-line", "64", "--max-per-ip", "2")

    @defer.inlineCallbacks
    def test_bad_messages_are_refused_and_the_connection_stays(self):
        bob = yield self.web_user("bob")
        for payload, kind in [
            (b"not json", "bad-message"),
            (b"[1, 2]", "bad-message"),
            (b'{"type": "dance"}', "bad-message"),
            (b'{"type": "say", "text": 5}', "bad-message"),
            (json.dumps({"type": "say", "room": "#lobby", "text": "x" * 65}).encode(),
             "too-long"),
            (b'{"type": "history", "before": "12ab"}', "bad-message"),
        ]:
            bob.sendMessage(payload)
            refusal = yield bob.next_of("refusal")
            self.assertEqual(refusal["kind"], kind, payload)
        alice = yield self.line_user("alice")
        bob.sendMessage(b'{"type": "say", "room": "#lobby", "text": "\\ud800"}')
        self.assertEqual((yield bob.next_of("refusal"))["kind"], "bad-message")
        alice.send(b"still here\n")  # nobody was disconnected by it
        self.assertEqual((yield bob.next_of("said"))["text"], "still here")
        bob.sendMessage(b"\x00\x01", isBinary=True)
        self.assertEqual((yield bob.next_of("refusal"))["kind"], "bad-message")
        bob.send(type="say", room="#lobby", text="x" * 64)  # at the limit: fine
        self.assertEqual((yield bob.next_of("said"))["text"], "x" * 64)

    @defer.inlineCallbacks
    def test_a_frame_past_autobahns_limit_closes_the_connection(self):
        bob = yield self.web_user("bob")
        bob.sendMessage(b" " * (web.frame_limit(Limits(max_line=64)) + 1))
        code, _ = yield bob.wait_closed()
        self.assertEqual(code, 1009)

    @defer.inlineCallbacks
    def test_per_address_cap(self):
        yield self.connect()
        yield self.connect()
        with self.assertRaises(ConnectionError):
            yield self.connect()

    @defer.inlineCallbacks
    def test_another_sites_page_is_refused_and_our_own_is_not(self):
        with self.assertRaises(ConnectionError):
            yield self.connect(origin="http://evil.example")
        user = yield self.connect(origin=f"http://127.0.0.1:{self.web_port}")
        user.send(type="hello", nick="bob")
        yield user.next_of("registered")

    @defer.inlineCallbacks
    def test_shutdown_says_so_then_closes(self):
        bob = yield self.web_user("bob")
        stopping = self.service.stopService()
        notice = yield bob.next_of("notice")
        self.assertEqual(notice["text"], "server shutting down")
        code, reason = yield bob.wait_closed()
        self.assertEqual((code, reason), (1000, "server shutting down"))
        yield stopping


class WebFloodTests(WebHarness):
    """The flood bucket holds a burst back and lets it through, in order, at the rate."""

    options = ("--flood-rate", "20", "--flood-burst", "2", "--login-timeout", "1")

    @defer.inlineCallbacks
    def test_a_burst_is_slowed_not_lost(self):
        alice = yield self.line_user("alice")
        bob = yield self.web_user("bob")
        yield alice.next_line()
        for n in range(8):
            bob.send(type="say", room="#lobby", text=f"line {n}")
        self.assertEqual((yield alice.read_lines(8)), [f"bob: line {n}" for n in range(8)])
        notice = yield bob.next_of("notice")
        self.assertTrue(notice["text"].startswith("slow down"), notice)

    @defer.inlineCallbacks
    def test_a_socket_that_never_says_hello_is_timed_out(self):
        user = yield self.connect()
        code, _ = yield user.wait_closed(timeout=5)
        self.assertEqual(code, 1000)
        self.assertIn("notice", [m["type"] for m in user.messages])


class WebProxyTests(WebHarness):
    """Behind a trusted proxy the client's address is X-Forwarded-For's; otherwise not."""

    options = ("--max-per-ip", "1", "--trust-proxy")

    @defer.inlineCallbacks
    def test_each_forwarded_address_has_its_own_cap(self):
        yield self.connect(headers={"X-Forwarded-For": "203.0.113.1"})
        yield self.connect(headers={"X-Forwarded-For": "203.0.113.2"})
        with self.assertRaises(ConnectionError):
            yield self.connect(headers={"X-Forwarded-For": "203.0.113.2"})


class WebUntrustedProxyTests(WebHarness):
    options = ("--max-per-ip", "1")

    @defer.inlineCallbacks
    def test_forwarded_header_ignored_without_trust_proxy(self):
        yield self.connect(headers={"X-Forwarded-For": "203.0.113.1"})
        with self.assertRaises(ConnectionError):
            yield self.connect(headers={"X-Forwarded-For": "203.0.113.2"})


class WebPageTests(WebHarness):
    @defer.inlineCallbacks
    def test_the_page_is_served_at_the_root(self):
        agent = web_client.Agent(self.reactor)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.web_port}/".encode())
        body = yield web_client.readBody(response)
        self.assertEqual(response.code, 200)
        self.assertIn(b"<!doctype html>", body.lower())


class _FakeSession:
    """What the protocol needs of a session, recording what it is handed."""

    def __init__(self):
        self.handled = []
        self.ended = []
        self.joined = False

    def start(self, greet=True):
        self.greet = greet

    def handle(self, command):
        self.handled.append(command)

    def end(self, reason):
        self.ended.append(reason)

    def connection_lost(self):
        self.ended.append("lost")


class WebProtocolUnitTests(TestCase):
    """The protocol on a StringTransport and a task.Clock: input held in order, too slow."""

    def setUp(self):
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from chatservice.core.limits import Admission

        self.clock = Clock()
        self.session = _FakeSession()
        from chatservice.core.hub import Hub

        self.factory = web.WebChatFactory(
            hub=Hub(self.clock), registry=None, clock=self.clock, admission=Admission(0, 0),
            limits=Limits(max_backlog=100))
        self.factory.make_session = lambda participant: self.session
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.transport = self.transport
        self.protocol.state = web.WebChatProtocol.STATE_OPEN
        self.protocol.onOpen()

    def message(self, **fields):
        self.protocol.onMessage(json.dumps(fields).encode(), False)

    def test_messages_read_while_paused_wait_in_order(self):
        self.message(type="say", room="#a", text="1")
        self.protocol.pause_input()
        self.assertEqual(self.transport.producerState, "paused")
        self.message(type="say", room="#a", text="2")
        self.message(type="say", room="#a", text="3")
        self.assertEqual([c.text for c in self.session.handled], ["1"])
        self.protocol.resume_input()
        self.assertEqual([c.text for c in self.session.handled], ["1", "2", "3"])
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_reader_too_slow_is_dropped_after_the_turn(self):
        from chatservice.core.batch import Batch
        from chatservice.core.events import Said

        self.transport.producer.pauseProducing()  # the socket's buffer is full
        self.protocol.deliver(Batch.of([Said(1, 1.0, "#a", "al", "x" * 200)]))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.session.ended, [])
        self.clock.advance(0)
        self.assertEqual(self.session.ended, ["too slow to read"])

    def test_origins(self):
        own = web.WebChatFactory(None, None, self.clock, None)
        self.assertTrue(own.origin_allowed("http://chat.example:8080", "chat.example:8080"))
        self.assertFalse(own.origin_allowed("http://evil.example", "chat.example:8080"))
        self.assertFalse(own.origin_allowed("https://chat.example:8080", "chat.example:8080"))
        self.assertTrue(own.origin_allowed(None, "chat.example:8080"))  # not a browser
        listed = web.WebChatFactory(None, None, self.clock, None,
                                    origins=("https://chat.example/",))
        self.assertTrue(listed.origin_allowed("https://chat.example", "internal:8080"))
        self.assertFalse(listed.origin_allowed("http://internal:8080", "internal:8080"))
        anyone = web.WebChatFactory(None, None, self.clock, None, origins=("*",))
        self.assertTrue(anyone.origin_allowed("http://evil.example", "chat.example"))
