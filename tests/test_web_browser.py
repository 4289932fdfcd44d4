"""
The page in a real browser: Debian's chromium, driven by Playwright (the pip package,
launched with the Debian binary; nothing is downloaded), against a real C{twistd
chatroom} subprocess, with a raw TCP user beside two browser users.

Two browser users and an nc-style user chat in #lobby; one browser user joins #dev
and sees its history; the server is restarted (same ports, same history file) and
both pages reconnect and resume, with no line missing or repeated.  Every wait is
Playwright's or a socket's, bounded; nothing sleeps.  C{make test} installs chromium
(its C{test-programs} target).  Set C{CHATROOM_WEB_SCREENSHOT=FILE} to keep a
screenshot of the page (the README's is made so).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests import support

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
#: How a root process in a container without a display may start Debian's chromium
#: (and keep it off the network this machine does not have).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WAIT_MS = 15000
#: Lines said in #dev before ann joins it: more than a join replays (20).
DEV_LINES = 26


class LineUser:
    """A raw TCP chat user (as nc is), with blocking reads bounded by a deadline."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.lines: list[str] = []
        self.send(nick)
        self.read_until(lambda line: line.startswith("* type /help"))

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def read_until(self, check, timeout: float = 10) -> list[str]:
        """Read lines until one passes C{check}; return the lines read, that one included."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode()
                got.append(line)
                self.lines.append(line)
                if check(line):
                    return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise support.WaitTimedOut(f"waited {timeout}s in vain; read {got!r}")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise support.ClosedWhileWaiting(f"closed; read {got!r}")
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


class Server:
    """C{python -m twisted chatroom} from this tree, on fixed ports and a history file."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.tcp = support.free_port()
        self.web = support.free_port()
        self.process = None

    def start(self) -> None:
        log = open(os.path.join(self.folder, "server.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "twisted", "chatroom",
             "--tcp", f"tcp:{self.tcp}:interface=127.0.0.1", "--udp", "off", "--irc", "off",
             "--web", f"tcp:{self.web}:interface=127.0.0.1",
             "--history", os.path.join(self.folder, "history.sqlite3")],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.web), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {self.log()}")
                time.sleep(0.05)  # polling for the port, bounded by the deadline above

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def log(self) -> str:
        with open(os.path.join(self.folder, "server.log"), errors="replace") as f:
            return f.read()


class BrowserTests(SynchronousTestCase):
    """Two browser users and a line user, a room with history, a server restart."""

    def setUp(self):
        if not os.path.exists(CHROMIUM):
            self.fail("chromium is not installed; `make test-programs` installs it")
        from playwright.sync_api import sync_playwright

        self.folder = tempfile.mkdtemp(prefix="chatroom-browser-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.server = Server(self.folder)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.addCleanup(self.browser.close)

    def page(self, nick, phone=False):
        """
        A browser user of its own (its own context), logged in as C{nick} with the
        keyboard alone: the nickname field has the focus, Enter submits.
        """
        from playwright.sync_api import expect

        size = {"width": 390, "height": 740} if phone else {"width": 1000, "height": 640}
        context = self.browser.new_context(viewport=size)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{self.server.web}/")
        expect(page.get_by_role("textbox", name="Nickname", exact=True)).to_be_focused()
        page.keyboard.type(nick)
        page.keyboard.press("Enter")
        expect(page.locator("#me")).to_have_text(nick, timeout=WAIT_MS)
        expect(page.locator("#title")).to_have_text("#lobby", timeout=WAIT_MS)
        return page

    @staticmethod
    def say(page, text):
        page.get_by_role("textbox", name="Message to").fill(text)
        page.keyboard.press("Enter")

    @staticmethod
    def log_lines(page):
        return page.locator("#log li").all_inner_texts()

    def test_two_pages_and_a_line_user_then_history_then_a_restart(self):
        from playwright.sync_api import expect

        carol = LineUser(self.server.tcp, "carol")
        self.addCleanup(carol.close)
        ann = self.page("ann")
        carol.read_until(lambda line: line == "* ann joined")
        ben = self.page("ben", phone=True)
        carol.read_until(lambda line: line == "* ben joined")
        # At phone width the input and the rooms (behind a button) are still there.
        expect(ben.get_by_role("textbox", name="Message to")).to_be_in_viewport()
        expect(ben.get_by_role("button", name="Send")).to_be_in_viewport()
        ben.get_by_role("button", name="Rooms").click()
        expect(ben.locator("#rooms button", has_text="#lobby")).to_be_visible()

        self.say(ann, "hello from ann")
        carol.read_until(lambda line: line == "ann: hello from ann")
        expect(ben.locator("#log li", has_text="ann: hello from ann")).to_have_count(1)
        carol.send("hi from nc")
        for page in (ann, ben):
            expect(page.locator("#log li", has_text="carol: hi from nc")).to_have_count(1)
        # Text from users is text: markup arrives as characters, not elements.
        carol.send("<b>not bold</b>")
        expect(ann.locator("#log li", has_text="<b>not bold</b>")).to_have_count(1)
        self.assertEqual(ann.locator("#log b").count(), 0)

        # #dev has history before ann joins it.
        carol.send("/join #dev")
        carol.read_until(lambda line: line.startswith("* you joined #dev"))
        for n in range(DEV_LINES):
            carol.send(f"dev history {n}")
        carol.send("/join #lobby")
        carol.read_until(lambda line: line == "* your lines go to #lobby")
        ann.get_by_role("textbox", name="Join a room").fill("#dev")
        ann.locator("#join").get_by_role("button", name="Join").click()
        expect(ann.locator("#title")).to_have_text("#dev", timeout=WAIT_MS)
        # Joining shows the last 20 (--replay); older lines come on asking, in order.
        dev = ann.locator("#log li", has_text="carol: dev history")
        expect(dev).to_have_count(20, timeout=WAIT_MS)
        expect(dev.first).to_contain_text(f"dev history {DEV_LINES - 20}")
        ann.get_by_role("button", name="Load older lines").click()
        expect(dev).to_have_count(DEV_LINES, timeout=WAIT_MS)
        self.assertEqual([line.rsplit(" ", 1)[1] for line in dev.all_inner_texts()],
                         [str(n) for n in range(DEV_LINES)])
        expect(ann.locator("#members")).to_contain_text("carol")
        # A private conversation has its own pane.
        carol.send("/msg ann a secret")
        expect(ann.locator("#privates")).to_contain_text("carol")
        ann.locator("#privates button", has_text="carol").click()
        expect(ann.locator("#log li", has_text="carol: a secret")).to_have_count(1)
        ann.locator("#rooms button", has_text="#lobby").click()
        expect(ann.locator("#title")).to_have_text("#lobby")

        # The restart: both pages see the connection go and come back, and resume.
        self.server.stop()
        for page in (ann, ben):
            expect(page.locator("#state")).to_contain_text("reconnecting", timeout=WAIT_MS)
        self.server.start()
        carol = LineUser(self.server.tcp, "carol")
        self.addCleanup(carol.close)
        for n in range(3):
            carol.send(f"after restart {n}")
        for page in (ann, ben):
            expect(page.locator("#state")).to_have_text("connected", timeout=WAIT_MS)
            expect(page.locator("#log li", has_text="carol: after restart 2")).to_have_count(
                1, timeout=WAIT_MS)
        self.say(ben, "ben is back")
        carol.read_until(lambda line: line == "ben: ben is back")
        expect(ann.locator("#log li", has_text="ben: ben is back")).to_have_count(1)
        for page in (ann, ben):
            said = [line.split(" ", 1)[1] for line in self.log_lines(page)
                    if ": " in line and not line.startswith("*")]
            expected = ["ann: hello from ann", "carol: hi from nc", "carol: <b>not bold</b>",
                        "carol: after restart 0", "carol: after restart 1",
                        "carol: after restart 2", "ben: ben is back"]
            self.assertEqual(said, expected)  # each line once, in order, nothing missing

        screenshot = os.environ.get("CHATROOM_WEB_SCREENSHOT")
        if screenshot:
            ann.screenshot(path=screenshot)

    def test_page_logic_in_the_browser(self):
        """chat.js's rules, run by the browser itself on the module the server serves."""
        page = self.browser.new_context().new_page()
        page.goto(f"http://127.0.0.1:{self.server.web}/")
        result = page.evaluate("""async () => {
            const m = await import("/chat.js");
            const out = {};
            // Typed lines to protocol messages, in a room and in a private pane.
            out.parsed = [
                m.parseInput("hello", "#dev"), m.parseInput("/me waves", "#dev"),
                m.parseInput("/me nods", "bob"), m.parseInput("hi", "bob"),
                m.parseInput("/msg bob lunch at 12", "#dev"), m.parseInput("//slash", "#dev"),
                m.parseInput("/part", "#dev"), m.parseInput("/topic #x new topic", "#dev"),
                m.parseInput("/history 500", "#dev"), m.parseInput("/bogus", "#dev"),
                m.parseInput("   ", "#dev"),
            ];
            // Lines kept in id order whatever order they come in; a repeat is dropped;
            // a notice stays after what had come before it.
            const c = new m.Conversation("#dev");
            const big = "917653852629499904";
            for (const id of ["30", big, "10", "20"]) c.add({kind: "said", id, text: id});
            c.add({kind: "system", text: "notice"});
            c.add({kind: "said", id: "25", text: "25"});
            out.repeat = c.add({kind: "said", id: "20", text: "again"});
            out.order = c.messages.map((x) => x.text);
            out.last = c.lastLineId();
            // Catching up after a reconnect: full pages are followed by more, a short one ends it.
            const chat = new m.Chat("ws://127.0.0.1:1/none");
            const sent = [];
            chat.send = (message) => { sent.push(message); return true; };
            chat.nick = "ann";
            const room = chat.conversation("#dev");
            room.joined = true;
            room.add({kind: "said", id: "100", text: "seen"});
            chat.hello();
            chat.receive({type: "history-start", room: "#dev", count: 1000});
            chat.receive({type: "replayed", event: {type: "said", id: "2000", room: "#dev",
                                                    nick: "bob", text: "x", time: 1}});
            chat.receive({type: "history-end", room: "#dev"});
            chat.receive({type: "history-start", room: "#dev", count: 200});
            chat.receive({type: "replayed", event: {type: "said", id: "3000", room: "#dev",
                                                    nick: "bob", text: "y", time: 1}});
            chat.receive({type: "history-end", room: "#dev"});
            chat.receive({type: "history-start", room: "#dev", count: 3});
            chat.receive({type: "history-end", room: "#dev"});
            out.sent = sent;
            return out;
        }""")
        self.assertEqual(result["parsed"], [
            {"type": "say", "room": "#dev", "text": "hello"},
            {"type": "me", "room": "#dev", "text": "waves"},
            {"type": "msg", "nick": "bob", "text": "nods", "action": True},
            {"type": "msg", "nick": "bob", "text": "hi"},
            {"type": "msg", "nick": "bob", "text": "lunch at 12"},
            {"type": "say", "room": "#dev", "text": "/slash"},
            {"type": "part", "room": "#dev", "reason": ""},
            {"type": "topic", "room": "#x", "text": "new topic"},
            {"type": "history", "room": "#dev", "count": 200},
            {"error": "unknown command: /bogus (try /help)"},
            None,
        ])
        self.assertEqual(result["repeat"], -1)
        self.assertEqual(result["order"], ["10", "20", "25", "30", "917653852629499904",
                                           "notice"])
        self.assertEqual(result["last"], "917653852629499904")
        self.assertEqual(result["sent"], [
            {"type": "hello", "nick": "ann", "rooms": {"#dev": "100"}},
            {"type": "history", "room": "#dev", "count": 200, "after": "2000"},
            {"type": "history", "room": "#dev", "count": 200, "after": "3000"},
        ])
