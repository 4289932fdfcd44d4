# -*- test-case-name: tests.test_terminal -*-
"""chatroom-client at a terminal: an input line that incoming text never breaks.

When stdin and stdout are both terminals, the client reads what the person
types with prompt_toolkit (editing, UTF-8, history on the arrow keys) and
prints the server's lines above the input line, with the time, a stable
colour per nick, notices and errors styled apart, and colour only where the
terminal has it (prompt_toolkit honours C{NO_COLOR} and C{TERM=dumb}).
prompt_toolkit runs on asyncio, so this mode runs Twisted's asyncio reactor;
a pipe keeps the default reactor and the plain console.

The chat rules stay in L{chatservice.client.ChatClient}; this module only
shows lines and reads them.  What it knows of the chat (the current room, our
nick) it reads off the server's notices, as a person would.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.output import ColorDepth, create_output
from prompt_toolkit.renderer import print_formatted_text as render_fragments
from prompt_toolkit.styles import Style
from twisted.internet import defer

#: Styles of the parts of a line; colour names a 16-colour terminal has.
STYLE = Style.from_dict({
    "time": "ansibrightblack",
    "notice": "ansibrightblack",
    "error": "ansired bold",
    "room": "ansicyan",
    "private": "ansimagenta bold",
    "own": "bold",
    "prompt": "bold",
})
#: Nick colours: one per nick, the same in every session (a hash of the nick in lower case,
#: as nicks are unique ignoring ASCII case).
NICK_COLOURS = (
    "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan", "ansired",
    "ansibrightgreen", "ansibrightyellow", "ansibrightblue", "ansibrightmagenta",
    "ansibrightcyan", "ansibrightred",
)
#: The prompt while the server waits for a nickname.
NICK_PROMPT = "nickname> "

_NICK = r"[A-Za-z_\[\]{}\\|^][A-Za-z0-9_\-\[\]{}\\|^]*"
_SAID = re.compile(rf"({_NICK})(: )(.*)\Z", re.DOTALL)
_ROOM_MARK = re.compile(r"(\[#[^\]\s]+\] )(.*)\Z", re.DOTALL)
_STAMP = re.compile(r"(\[(?:\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}\] )(.*)\Z", re.DOTALL)
_WELCOME = re.compile(rf"\* you are ({_NICK}); \d+ in (#\S+?):")
_JOINED = re.compile(r"\* you joined (#\S+?);")
_CURRENT = re.compile(r"\* (?:you left #\S+?; )?your lines go to (#\S+)\Z")
_NO_ROOM = re.compile(r"\* you left #\S+?; you are in no room now")
_RENAMED = re.compile(rf"\* ({_NICK}) is now known as ({_NICK})\Z")


def install_reactor() -> None:
    """Make Twisted run on an asyncio loop, where prompt_toolkit runs (before any reactor)."""
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)


def nick_colour(nick: str) -> str:
    """The colour C{nick} is shown in, the same wherever and whenever it is shown."""
    return NICK_COLOURS[zlib.crc32(nick.lower().encode("utf-8")) % len(NICK_COLOURS)]


def _said(text: str, own_nick: str | None) -> list:
    """C{NICK: text} with the nick in its colour; anything else as it is."""
    said = _SAID.match(text)
    if said is None:
        return [("", text)]
    nick, colon, body = said.groups()
    style = "class:own" if own_nick is not None and nick.lower() == own_nick.lower() else ""
    return [(f"{style} fg:{nick_colour(nick)}".strip(), nick), ("", colon), ("", body)]


def _body(text: str, own_nick: str | None) -> list:
    if text.startswith("! "):
        return [("class:error", text)]
    if text.startswith("* "):
        return [("class:notice", text)]
    if text.startswith("[private] "):
        return [("class:private", "[private] ")] + _said(text[10:], own_nick)
    if text.startswith("-> "):
        return [("class:private", "-> ")] + _said(text[3:], own_nick)
    return _said(text, own_nick)


def fragments(line: str, when: float, own_nick: str | None = None) -> list:
    """
    One server line as prompt_toolkit (style, text) fragments, after the time it
    arrived; history lines keep the time they were said instead.  The text is
    the server's, unchanged: only styles are added.
    """
    stamp = _STAMP.match(line)
    if stamp is not None:
        head, rest = stamp.groups()
        out = [("class:time", head)]
    else:
        rest = line
        out = [("class:time", time.strftime("%H:%M ", time.localtime(when)))]
    mark = _ROOM_MARK.match(rest)
    if mark is not None:
        out.append(("class:room", mark.group(1)))
        rest = mark.group(2)
    return out + _body(rest, own_nick)


def own_line(text: str, nick: str) -> str | None:
    """
    How a line we typed shows for us, as the others see it, or None for a
    command (its answer comes from the server, as C{-> NICK: text} for C{/msg}).
    """
    if text.startswith("//"):
        return f"{nick}: {text[1:]}"
    if text.startswith("/me "):
        return f"* {nick} {text[4:]}"
    if text.startswith("/") or not text.strip():
        return None
    return f"{nick}: {text}"


class ChatView:
    """
    What the screen needs to know of the chat, read off the server's notices:
    our nick and the room our lines go to.
    """

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.room: str | None = None

    def seen(self, line: str) -> None:
        """Follow one server line (unmarked lines only: marked ones are other rooms')."""
        welcome = _WELCOME.match(line)
        if welcome is not None:
            self.nick, self.room = welcome.groups()
            return
        for pattern in (_JOINED, _CURRENT):
            found = pattern.match(line)
            if found is not None:
                self.room = found.group(1)
                return
        if _NO_ROOM.match(line):
            self.room = None
            return
        renamed = _RENAMED.match(line)
        if renamed is not None and renamed.group(1).lower() == self.nick.lower():
            self.nick = renamed.group(2)


class TerminalConsole:
    """
    The interactive console: prompt_toolkit's input line at the bottom, the
    chat above it.

    Lines are printed a reactor turn's worth at a time, above the prompt
    (prompt_toolkit redraws the input line after each batch, so a burst of
    history costs one redraw, and what is being typed is never broken).

    @param clock: for the time each line arrived.
    @param input, output: prompt_toolkit's, for tests; the terminal by default.
    """

    def __init__(self, clock, input=None, output=None) -> None:
        self._clock = clock
        self._output = output if output is not None else create_output()
        self._colour_depth = ColorDepth.from_env() or self._output.get_default_color_depth()
        # erase_when_done: a line sent leaves the input line, and shows above as the
        # others see it (L{own_line}).
        self._session = PromptSession(input=input, output=self._output, style=STYLE,
                                      color_depth=self._colour_depth, erase_when_done=True)
        self._pending: list = []
        self._flushing = False
        self._exiting = False
        self._held: list[str] = []
        self._paused = False
        self._loop_done: defer.Deferred | None = None
        self.client = None
        self.view: ChatView | None = None

    # -- what the client calls ---------------------------------------------------

    def show(self, line: str) -> None:
        """Print one line from the server (or the client) above the input line."""
        if self.view is not None:
            self.view.seen(line)
        self._print(line)

    def _print(self, line: str) -> None:
        own = self.view.nick if self.view is not None else None
        self._pending.append(fragments(line, self._clock.seconds(), own))
        if not self._flushing:
            self._flushing = True
            self._clock.callLater(0, self._flush)

    def pause_reading(self) -> None:
        """The link is full: hold typed lines until L{resume_reading}."""
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        held, self._held = self._held, []
        for text in held:
            self._send(text)

    # -- running -------------------------------------------------------------------

    def start(self, client) -> None:
        """Read lines for C{client} until it is done, or the person leaves."""
        self.client = client
        self.view = ChatView(client.name)
        client.console = self
        task = asyncio.ensure_future(self._read_lines())
        self._loop_done = defer.Deferred.fromFuture(task)

    @defer.inlineCallbacks
    def stop(self):
        """Print what is pending, end the input line; fire once the terminal is ours again."""
        app = self._session.app
        if app.is_running and not app.is_done:
            printed = self._flush()
            if printed is not None:
                yield defer.Deferred.fromFuture(printed)
            self._exiting = True  # lines until the prompt is gone wait for it
            app.exit()
        if self._loop_done is not None:
            yield self._loop_done
        self._exiting = False
        self._flush()

    # -- the input line ------------------------------------------------------------

    def _prompt(self):
        client = self.client
        if client is not None and (client.asking_name or not client.joined):
            return [("class:prompt", NICK_PROMPT if client.asking_name else "> ")]
        room = self.view.room if self.view is not None else None
        return [("class:prompt", f"{room or ''}> ")]

    async def _read_lines(self) -> None:
        session = self._session
        while not self.client.done:
            try:
                text = await session.prompt_async(self._prompt)
            except (KeyboardInterrupt, EOFError):
                self.client.leave()
                return
            if text is None or self.client.done:  # stop() ended the prompt
                return
            if self._paused:
                self._held.append(text)
            else:
                self._send(text)
            self._flush()  # between two prompts: our line goes where the last prompt was

    def _send(self, text: str) -> None:
        client = self.client
        echo = None
        if client.joined and not client.asking_name:
            echo = own_line(text, self.view.nick)
        client.user_line(text)
        if echo is not None:
            self._print(echo)

    # -- printing ------------------------------------------------------------------

    def _flush(self):
        """Print the pending lines; a future while the prompt is up (they print above it)."""
        self._flushing = False
        if self._exiting:
            return None
        pending, self._pending = self._pending, []
        if not pending:
            return None
        parts: list = []
        for line in pending:
            parts.extend(line)
            parts.append(("", "\n"))

        def render() -> None:
            render_fragments(self._output, parts, STYLE, color_depth=self._colour_depth)
            self._output.flush()

        app = self._session.app
        if app.is_running and not app.is_done:
            return run_in_terminal(render)
        render()
        return None
