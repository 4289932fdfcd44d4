# -*- test-case-name: tests.test_irc -*-
"""IRC for irssi, WeeChat, HexChat and bots: the same rooms, nicks and history as every transport.

Rooms are channels.  An IRC connection is a stream connection (L{StreamChatProtocol}
gives it framing, the input gate, flood pauses, the send queue and its bound)
whose lines are IRC messages: registration (CAP, PASS, NICK, USER) is handled
here, then each command becomes a command value for the user's L{Session},
applied in order like every transport's lines, and every event the hub hands
over is rendered as IRC by L{IRCRender}.  No chat rules here: replies that only
IRC has (NAMES, WHO, WHOIS, MODE...) are built from what the hub reports, at
their turn in the session's order.

Users on other transports appear as C{nick!chat@SERVER}; IRC users too (their
own USER name is not shown to others), so no address leaks to anyone.
"""

import time
from itertools import accumulate

from twisted.logger import Logger

from chatservice import __version__
from chatservice.core.commands import (
    Call, Join, Me, Msg, Nick, Part, Quit, Rooms, Say, TagMsg, Topic,
)
from chatservice.core.errors import BadUsage, ChatError
from chatservice.core.events import (
    CurrentRoom, Emote, HelpText, HistoryEnd, HistoryStart, Joined, Left, Notice, Parted,
    Private, PrivateSent, Refusal, Registered, Renamed, Replayed, Reply, RoomJoined,
    RoomList, RoomParted, Said, TagMessage, TopicChanged, TopicIs, Welcome, WhoList,
)
from chatservice.core.render import scrub
from chatservice.core.names import fold
from chatservice.core.nicks import NICK_MAX_LENGTH
from chatservice.core.session import Session
from chatservice.frontends import ircwire
from chatservice.frontends.stream import StreamChatFactory, StreamChatProtocol

#: Capabilities offered in C{CAP LS}; anything else requested is NAKed.
CAPABILITIES = ("batch", "echo-message", "message-tags", "server-time")

#: Longest room name (C{#} included) and topic advertised in 005.
CHANNEL_LENGTH = 51


def _iso(moment: float) -> str:
    """An IRCv3 C{server-time} value: UTC, milliseconds, C{Z}."""
    whole = int(moment)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % int(
        (moment - whole) * 1000)


def split_text(text: str, budget: int) -> list[str]:
    """C{text} in pieces of at most C{budget} UTF-8 bytes, cut between characters."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return [text]
    pieces, start = [], 0
    while start < len(data):
        end = min(start + budget, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode("utf-8", errors="replace"))
        start = end
    return pieces


class IRCRender:
    """
    Events as IRC lines, for one set of capabilities.

    Room events render the same for every recipient with the same capabilities,
    so the factory keeps one of these per capability set and the bytes of a
    shared run are made once for all of them.
    """

    def __init__(self, server: str, server_time: bool, batch: bool, message_tags: bool = False):
        self.server = server
        self.server_time = server_time
        self.batch = batch
        self.message_tags = message_tags
        self.key = ("irc", server_time, batch, message_tags)

    def source(self, nick: str) -> str:
        return f"{nick}!chat@{self.server}"

    def _tags(self, moment: float, event=None) -> dict | None:
        """C{time} (server-time), C{msgid} and the sender's client-only tags (message-tags)."""
        tags = {"time": _iso(moment)} if self.server_time else {}
        if self.message_tags and event is not None:
            message_id = getattr(event, "id", None)
            if message_id is not None:
                tags["msgid"] = str(message_id)
            tags.update(getattr(event, "tags", ()))
        return tags or None

    def message(self, nick: str, command: str, target: str, text: str, moment: float,
                 tags: dict | None = None, event=None) -> str:
        """A PRIVMSG or NOTICE, split so no line passes 512 bytes."""
        head = f":{self.source(nick)} {command} {target} :"
        budget = ircwire.MAX_MESSAGE - 2 - len(head.encode("utf-8"))
        if tags is None:
            tags = self._tags(moment, event)
        prefix = ircwire.tag_section(tags) if tags else ""
        return "".join(f"{prefix}{head}{piece}\r\n" for piece in split_text(text, budget))

    def shared(self, event) -> str:
        """An event every recipient with these capabilities sees alike (room and user events)."""
        kind = type(event)
        if kind is Said:
            return self.message(event.nick, "NOTICE" if event.notice else "PRIVMSG",
                                 event.room, event.text, event.time, event=event)
        if kind is Emote:
            return self.message(event.nick, "PRIVMSG", event.room,
                                 f"\x01ACTION {event.text}\x01", event.time, event=event)
        tags = self._tags(event.time, event) if hasattr(event, "time") else None
        if kind is TagMessage:
            if not self.message_tags:
                return ""
            return ircwire.line(self.source(event.nick), "TAGMSG", event.target, tags=tags)
        if kind is Joined:
            return ircwire.line(self.source(event.nick), "JOIN", event.room, tags=tags)
        if kind is Parted:
            params = (event.room, event.reason) if event.reason else (event.room,)
            return ircwire.line(self.source(event.nick), "PART", *params, tags=tags)
        if kind is Left:
            return ircwire.trailing(self.source(event.nick), "QUIT", event.reason, tags=tags)
        if kind is Renamed:
            return ircwire.line(self.source(event.old), "NICK", event.new, tags=tags)
        if kind is TopicChanged:
            return ircwire.trailing(self.source(event.nick), "TOPIC", event.room, event.text,
                                    tags=tags)
        return None


class IRCChatProtocol(StreamChatProtocol):
    """
    One IRC client: registration, then IRC commands as session commands.

    @ivar caps: the capabilities this client enabled.
    """

    via = "irc"
    log = Logger()
    away = None  # the AWAY text, shown to others by WHOIS and 301 (None: here)

    def __init__(self, factory: "IRCChatFactory", host: str, peer: str | None = None) -> None:
        super().__init__(factory, host, peer)
        self.MAX_LENGTH = ircwire.MAX_LINE
        self.caps: set = set()
        self.echo = False  # the hub shows this user its own lines (echo-message)
        self._negotiating = False  # CAP LS or REQ seen, CAP END not yet
        self._wanted_nick = None
        self._user = None
        self._modes = set()
        self._batch = 0
        self._open_batches: dict = {}  # room -> batch id of its history being replayed

    # -- set-up ---------------------------------------------------------------

    def make_session(self) -> Session:
        return self.factory.make_session(self)

    def greet(self) -> None:
        """IRC clients speak first: no greeting, only the login timer."""
        self._session.start(greet=False)

    @property
    def _me(self) -> str:
        return self.nick or "*"

    @property
    def _registered(self) -> bool:
        """Whether the session has a nick (set as the registry grants it, before the
        welcome burst is written at the end of the turn)."""
        return self.nick is not None

    def _render(self) -> IRCRender:
        return self.factory.render_for(self.caps)

    # -- output helpers --------------------------------------------------------

    def _numeric(self, code: str, *params: str) -> str:
        return ircwire.line(self.factory.server_name, code, self._me, *params)

    def _numeric_text(self, code: str, *params: str) -> str:
        return ircwire.trailing(self.factory.server_name, code, self._me, *params)

    def _reply(self, text: str) -> None:
        """Lines told in order with everything else this user sees (through the hub)."""
        self.factory.hub.tell(self, Reply(text))

    # -- input -------------------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        """One IRC line from the client."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            message = ircwire.parse(raw)
        except ircwire.TooLong:
            self._refuse_too_long()
            return
        if message is None:
            return
        handler = getattr(self, "irc_" + message.command, None)
        if not self._registered and message.command not in _BEFORE_REGISTRATION:
            self._reply(self._numeric_text("451", "You have not registered"))
            return
        if handler is None:
            self._reply(self._numeric_text("421", message.command, "Unknown command"))
            return
        try:
            handler(message)
        except ChatError as refusal:
            self._reply(self._error_reply(refusal.kind, refusal.subject, message.command,
                                          str(refusal)))

    def _refuse_too_long(self) -> None:
        self._reply(self._numeric_text("417", "Input line was too long"))

    def _needs(self, message, count: int) -> tuple:
        if len(message.params) < count:
            raise BadUsage("Not enough parameters", subject=message.command)
        return message.params

    # -- registration --------------------------------------------------------------

    def irc_CAP(self, message) -> None:
        params = self._needs(message, 1)
        sub = params[0].upper()
        server = self.factory.server_name
        if sub == "LS":
            if not self._registered:
                self._negotiating = True
            self._reply(ircwire.trailing(server, "CAP", self._me, "LS", " ".join(CAPABILITIES)))
        elif sub == "LIST":
            self._reply(ircwire.trailing(server, "CAP", self._me, "LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            if not self._registered:
                self._negotiating = True
            wanted = params[1].split() if len(params) > 1 else []
            names = [name.lstrip("-") for name in wanted]
            if not wanted or any(name not in CAPABILITIES for name in names):
                self._reply(ircwire.trailing(server, "CAP", self._me, "NAK", " ".join(wanted)))
                return
            for item in wanted:
                if item.startswith("-"):
                    self.caps.discard(item[1:])
                else:
                    self.caps.add(item)
            self.echo = "echo-message" in self.caps
            self._reply(ircwire.trailing(server, "CAP", self._me, "ACK", " ".join(wanted)))
        elif sub == "END":
            self._negotiating = False
            self._try_register()
        else:
            self._reply(self._numeric_text("410", sub, "Invalid CAP command"))

    def irc_PASS(self, message) -> None:
        if self._registered:
            self._reply(self._numeric_text("462", "You may not reregister"))

    def irc_NICK(self, message) -> None:
        if not message.params or not message.params[0]:
            self._reply(self._numeric_text("431", "No nickname given"))
            return
        nick = message.params[0]
        if self._registered:
            self._session.handle(Nick(nick))
            return
        self._wanted_nick = nick
        self._try_register()

    def irc_USER(self, message) -> None:
        if self._registered:
            self._reply(self._numeric_text("462", "You may not reregister"))
            return
        params = self._needs(message, 4)
        self._user = params[0]
        self._try_register()

    def _try_register(self) -> None:
        """NICK and USER given and CAP negotiation over: ask the registry for the nick."""
        if self._registered or self._negotiating or not self._wanted_nick or not self._user:
            return
        self._session.handle(Nick(self._wanted_nick))

    def registered(self, nick: str) -> list:
        """The session has the nick: the welcome burst (001-005, MOTD), as lines."""
        f = self.factory
        server = f.server_name
        lines = [
            ircwire.trailing(server, "001", nick,
                             f"Welcome to the {f.network} IRC network, {nick}"),
            ircwire.trailing(server, "002", nick,
                             f"Your host is {server}, running version chatroom-{__version__}"),
            ircwire.trailing(server, "003", nick, f"This server was created {f.created}"),
            ircwire.line(server, "004", nick, server, f"chatroom-{__version__}", "i", "nt"),
            ircwire.trailing(
                server, "005", nick, "CASEMAPPING=ascii", "CHANTYPES=#",
                f"NICKLEN={NICK_MAX_LENGTH}", f"CHANNELLEN={CHANNEL_LENGTH}",
                f"NETWORK={f.network}", "PREFIX=", "CHANMODES=,,,nt",
                f"TOPICLEN={f.limits.max_topic}", "are supported by this server"),
        ]
        lines.extend(self._lusers(nick))
        if f.motd:
            lines.append(ircwire.trailing(server, "375", nick,
                                          f"- {server} Message of the day -"))
            lines.extend(ircwire.trailing(server, "372", nick, f"- {text}") for text in f.motd)
            lines.append(ircwire.trailing(server, "376", nick, "End of /MOTD command."))
        else:
            lines.append(ircwire.trailing(server, "422", nick, "MOTD File is missing"))
        return lines

    def _lusers(self, nick: str) -> list:
        server = self.factory.server_name
        users = self.factory.hub.connected
        rooms = len(self.factory.hub.rooms())
        return [
            ircwire.trailing(server, "251", nick,
                             f"There are {users} users and 0 invisible on 1 servers"),
            ircwire.line(server, "254", nick, str(rooms), "channels formed"),
            ircwire.trailing(server, "255", nick, f"I have {users} clients and 0 servers"),
        ]

    # -- commands -------------------------------------------------------------------

    def irc_PING(self, message) -> None:
        if not message.params or message.params[0] == "":
            self._reply(self._numeric_text("409", "No origin specified"))
            return
        server = self.factory.server_name
        self._reply(ircwire.trailing(server, "PONG", server, message.params[0]))

    def irc_PONG(self, message) -> None:
        """Clients answer our pings (we send none yet) or send them unasked: nothing to do."""

    def irc_QUIT(self, message) -> None:
        reason = message.params[0] if message.params else ""
        self._quit_reason = f"Quit: {reason}" if reason else "Quit"
        if not self._registered:
            self._session.end("quit", goodbye=f"Quit: {reason}" if reason else "Quit")
            return
        self._session.handle(Quit(f"Quit: {reason}" if reason else "Quit"))

    def irc_JOIN(self, message) -> None:
        params = self._needs(message, 1)
        if params[0] == "0":
            self._session.handle(Call(self._part_all))
            return
        for name in params[0].split(","):
            if name:
                self._session.handle(Join(name))

    def _part_all(self) -> list:
        return [Part(room.name, "") for room in self.factory.hub.rooms_of(self)]

    def irc_PART(self, message) -> None:
        params = self._needs(message, 1)
        reason = params[1] if len(params) > 1 else ""
        for name in params[0].split(","):
            if name:
                self._session.handle(Part(name, reason))

    def irc_PRIVMSG(self, message, notice: bool = False) -> None:
        command = message.command
        if not message.params or not message.params[0]:
            if not notice:
                self._reply(self._numeric_text("411", f"No recipient given ({command})"))
            return
        if len(message.params) < 2 or message.params[1] == "":
            if not notice:
                self._reply(self._numeric_text("412", "No text to send"))
            return
        text = message.params[1]
        action = text.startswith("\x01ACTION ") and text.endswith("\x01")
        if text.startswith("\x01") and not action:
            return  # other CTCP (VERSION, PING...) is not relayed
        tags = self._client_tags(message)
        for target in message.params[0].split(","):
            if not target:
                continue
            if target.startswith("#"):
                if action:
                    self._session.handle(Me(text[8:-1], room=target, quiet=notice, tags=tags))
                else:
                    self._session.handle(Say(text, room=target, quiet=notice, tags=tags))
            else:
                msg = Msg(target, text[8:-1] if action else text, quiet=notice, action=action,
                          tags=tags)
                if notice:
                    self._session.handle(msg)
                else:  # RFC 2812: a PRIVMSG to someone away is answered with 301
                    self._session.handle(Call(lambda msg=msg: self._tell_away(msg)))

    def _tell_away(self, msg) -> list:
        user = self.factory.hub.find(msg.nick)
        if user is not None and getattr(user, "away", None):
            self._reply(self._numeric_text("301", user.nick, user.away))
        return [msg]

    def _client_tags(self, message) -> tuple:
        """The message's client-only tags (C{+name}), if this client negotiated message-tags;
        their values scrubbed of control characters like any text."""
        if "message-tags" not in self.caps or not message.tags:
            return ()
        return tuple((key, scrub(value)) for key, value in message.tags.items()
                     if key.startswith("+"))

    def irc_TAGMSG(self, message) -> None:
        if not message.params or not message.params[0]:
            self._reply(self._numeric_text("411", "No recipient given (TAGMSG)"))
            return
        tags = self._client_tags(message)
        if not tags:
            return  # nothing to relay (a client without message-tags, or no client tags)
        for target in message.params[0].split(","):
            if target:
                self._session.handle(TagMsg(target, tags))

    def irc_NOTICE(self, message) -> None:
        self.irc_PRIVMSG(message, notice=True)

    def irc_TOPIC(self, message) -> None:
        params = self._needs(message, 1)
        self._session.handle(Topic(params[0], params[1] if len(params) > 1 else None))

    def irc_LIST(self, message) -> None:
        self._session.handle(Rooms(""))

    def irc_NAMES(self, message) -> None:
        if not message.params:
            self._reply(self._numeric_text("366", "*", "End of /NAMES list."))
            return
        for name in message.params[0].split(","):
            self._session.handle(Call(lambda name=name: self._names(name)))

    def _names(self, name: str) -> None:
        hub = self.factory.hub
        try:
            room = hub.room(name)
        except ChatError:
            self._reply(self._numeric_text("366", name, "End of /NAMES list."))
            return
        self._reply("".join(self._names_lines(room.name, [m.nick for m in room.members])))

    def _names_lines(self, room: str, nicks: list) -> list:
        """353 lines, as many nicks in each as fit in 512 bytes, then 366."""
        head = f":{self.factory.server_name} 353 {self._me} = {room} :"
        budget = ircwire.MAX_MESSAGE - 2 - len(head.encode("utf-8"))
        lines, current = [], []
        size = 0
        for nick in nicks:
            extra = len(nick.encode("utf-8")) + (1 if current else 0)
            if current and size + extra > budget:
                lines.append(head + " ".join(current) + "\r\n")
                current, size = [], 0
                extra = len(nick.encode("utf-8"))
            current.append(nick)
            size += extra
        if current:
            lines.append(head + " ".join(current) + "\r\n")
        lines.append(self._numeric_text("366", room, "End of /NAMES list."))
        return lines

    def irc_WHO(self, message) -> None:
        mask = message.params[0] if message.params else "*"
        self._session.handle(Call(lambda: self._who(mask)))

    def _who(self, mask: str) -> None:
        hub = self.factory.hub
        server = self.factory.server_name
        lines = []
        if mask.startswith("#"):
            try:
                room = hub.room(mask)
                members = [(room.name, m) for m in room.members]
            except ChatError:
                members = []
        else:
            user = hub.find(mask)
            members = [("*", user)] if user is not None else []
        for room_name, member in members:
            away = "G" if getattr(member, "away", None) else "H"
            lines.append(self._numeric_text(
                "352", room_name, "chat", server, server, member.nick, away,
                f"0 {member.nick} ({member.via})"))
        lines.append(self._numeric_text("315", mask, "End of WHO list"))
        self._reply("".join(lines))

    def irc_WHOIS(self, message) -> None:
        params = self._needs(message, 1)
        target = params[-1]
        self._session.handle(Call(lambda: self._whois(target)))

    def _whois(self, target: str) -> None:
        hub = self.factory.hub
        server = self.factory.server_name
        user = hub.find(target)
        if user is None:
            self._reply(self._numeric_text("401", target, "No such nick/channel")
                        + self._numeric_text("318", target, "End of /WHOIS list."))
            return
        lines = [self._numeric_text("311", user.nick, "chat", server, "*",
                                    f"{user.nick} ({user.via})")]
        rooms = " ".join(room.name for room in hub.rooms_of(user))
        if rooms:
            lines.append(self._numeric_text("319", user.nick, rooms))
        lines.append(self._numeric_text("312", user.nick, server, "chatroom"))
        if getattr(user, "away", None):
            lines.append(self._numeric_text("301", user.nick, user.away))
        lines.append(self._numeric_text("318", user.nick, "End of /WHOIS list."))
        self._reply("".join(lines))

    def irc_MODE(self, message) -> None:
        params = self._needs(message, 1)
        target = params[0]
        self._session.handle(Call(lambda: self._mode(target, params[1:])))

    def _mode(self, target: str, changes: tuple) -> None:
        hub = self.factory.hub
        if target.startswith("#"):
            room = hub.room(target)  # NoSuchRoom / InvalidRoom: 403
            if not changes:
                self._reply(self._numeric("324", room.name, "+nt"))
            elif changes[0].lstrip("+") in ("b", "e", "I"):  # list queries (irssi asks for b)
                ends = {"b": ("368", "End of channel ban list"),
                        "e": ("349", "End of channel exception list"),
                        "I": ("347", "End of channel invite list")}
                code, text = ends[changes[0].lstrip("+")]
                self._reply(self._numeric_text(code, room.name, text))
            else:
                self._reply(self._numeric_text("482", room.name,
                                               "You're not channel operator"))
            return
        if fold(target) != fold(self.nick):
            self._reply(self._numeric_text("502", "Can't change mode for other users"))
            return
        if not changes:
            self._reply(self._numeric("221", "+" + "".join(sorted(self._modes))))
            return
        sign, applied = "+", {"+": "", "-": ""}
        for char in changes[0]:
            if char in "+-":
                sign = char
            elif char == "i":
                if (sign == "+") != ("i" in self._modes):
                    (self._modes.add if sign == "+" else self._modes.discard)("i")
                    applied[sign] += "i"
            else:
                self._reply(self._numeric_text("501", "Unknown MODE flag"))
                return
        change = "".join(s + m for s, m in applied.items() if m)
        if change:
            self._reply(ircwire.trailing(self._render().source(self.nick), "MODE", self.nick,
                                         change))

    def irc_AWAY(self, message) -> None:
        text = message.params[0] if message.params else ""
        self._session.handle(Call(lambda: self._set_away(text)))

    def _set_away(self, text: str) -> None:
        self.away = text or None
        if text:
            self._reply(self._numeric_text("306", "You have been marked as being away"))
        else:
            self._reply(self._numeric_text("305", "You are no longer marked as being away"))

    def irc_USERHOST(self, message) -> None:
        params = self._needs(message, 1)
        self._session.handle(Call(lambda: self._userhost(params[:5])))

    def _userhost(self, nicks) -> None:
        server = self.factory.server_name
        found = []
        for nick in nicks:
            user = self.factory.hub.find(nick)
            if user is not None:
                flag = "-" if getattr(user, "away", None) else "+"
                found.append(f"{user.nick}={flag}chat@{server}")
        self._reply(self._numeric_text("302", " ".join(found)))

    def irc_ISON(self, message) -> None:
        params = self._needs(message, 1)
        nicks = " ".join(params).split()
        self._session.handle(Call(lambda: self._ison(nicks)))

    def _ison(self, nicks) -> None:
        hub = self.factory.hub
        online = [hub.find(n).nick for n in nicks if hub.find(n) is not None]
        self._reply(self._numeric_text("303", " ".join(online)))

    def irc_LUSERS(self, message) -> None:
        self._session.handle(Call(lambda: self._reply("".join(self._lusers(self.nick)))))

    def irc_MOTD(self, message) -> None:
        f = self.factory
        nick, server = self.nick, f.server_name
        if not f.motd:
            self._reply(ircwire.trailing(server, "422", nick, "MOTD File is missing"))
            return
        self._reply(ircwire.trailing(server, "375", nick, f"- {server} Message of the day -")
                   + "".join(ircwire.trailing(server, "372", nick, f"- {t}") for t in f.motd)
                   + ircwire.trailing(server, "376", nick, "End of /MOTD command."))

    # -- output ------------------------------------------------------------------------

    def deliver(self, batch) -> None:
        """
        Render each event as IRC: a shared run is encoded once per capability set, with
        the offset of every line, and each recipient gets a slice of those bytes.  (Runs
        holding this user's own replies are this user's alone, so caching them is safe.)
        """
        if self._gone or self.transport.disconnecting:
            return
        render = self._render()
        key = render.key
        chunks = []
        for shared, start, stop in batch.parts:
            hit = shared.encoded.get(key)
            if hit is None:
                pieces = []
                for event in shared.events:
                    text = render.shared(event)
                    if text is None:
                        text = self._own(event, render)
                    pieces.append(text.encode("utf-8", errors="replace"))
                hit = shared.encoded[key] = (
                    b"".join(pieces), list(accumulate(map(len, pieces), initial=0)))
            data, offsets = hit
            if start == 0 and stop == len(offsets) - 1:
                chunks.append(data)
            else:
                chunks.append(data[offsets[start]:offsets[stop]])
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if data:
            self._queue.write(data)

    def _own(self, event, render: IRCRender) -> str:
        """Events for this user alone: replies, private messages, history."""
        kind = type(event)
        server = self.factory.server_name
        me = self._me
        if kind is Reply:
            return event.text
        if kind is Private or kind is PrivateSent:
            if kind is PrivateSent and not self.echo:
                return ""
            text = f"\x01ACTION {event.text}\x01" if event.action else event.text
            command = "NOTICE" if event.notice else "PRIVMSG"
            if kind is Private:
                return render.message(event.sender, command, me, text, event.time, event=event)
            return render.message(me, command, event.recipient, text, event.time,
                                   event=event)
        if kind is Registered:
            return "".join(self.registered(event.nick))
        if kind is RoomJoined:
            room = event.room
            lines = [ircwire.line(render.source(me), "JOIN", room)]
            try:
                members = self.factory.hub.room(room).members
                nicks = [member.nick for member in members]
            except ChatError:
                nicks = [me]
            if event.topic:
                lines.append(self._numeric_text("332", room, event.topic))
            lines.extend(self._names_lines(room, nicks))
            return "".join(lines)
        if kind is RoomParted:
            params = (event.room, event.reason) if event.reason else (event.room,)
            return ircwire.line(render.source(me), "PART", *params)
        if kind is CurrentRoom or kind is Welcome:
            return ""
        if kind is TopicIs:
            if not event.text:
                return self._numeric_text("331", event.room, "No topic is set")
            return (self._numeric_text("332", event.room, event.text)
                    + self._numeric("333", event.room, event.nick or server,
                                    str(int(event.time))))
        if kind is RoomList:
            return ("".join(self._numeric_text("322", room, str(count), topic)
                            for room, count, topic in event.rooms)
                    + self._numeric_text("323", "End of /LIST"))
        if kind is WhoList:
            return "".join(self._names_lines(event.room, [nick for nick, _ in event.members]))
        if kind is HistoryStart:
            if render.batch and render.server_time:
                self._batch += 1
                ref = f"h{self._batch}"
                self._open_batches[event.room] = ref
                return ircwire.line(server, "BATCH", f"+{ref}", "chathistory", event.room)
            return ""
        if kind is HistoryEnd:
            ref = self._open_batches.pop(event.room, None)
            return ircwire.line(server, "BATCH", f"-{ref}") if ref else ""
        if kind is Replayed:
            return self._replayed(event, render)
        if kind is Notice:
            return "".join(ircwire.trailing(server, "NOTICE", me, piece)
                           for piece in split_text(event.text, 400))
        if kind is HelpText:
            return "".join(ircwire.trailing(server, "NOTICE", me, text) for text in event.lines)
        if kind is Refusal:
            return self._error_reply(event.kind, event.subject, event.command, event.text)
        return ""

    def _replayed(self, replay, render: IRCRender) -> str:
        """A history line: with its original time as C{@time} (in the batch), or in the text."""
        event = replay.event
        kind = type(event)
        if kind not in (Said, Emote):
            return ""
        text = event.text if kind is Said else f"\x01ACTION {event.text}\x01"
        if render.server_time:
            tags = {"time": _iso(event.time)}
            ref = self._open_batches.get(event.room)
            if ref:
                tags = {"batch": ref, **tags}
            return render.message(event.nick, "PRIVMSG", event.room, text, event.time, tags)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(event.time))
        body = event.text if kind is Said else f"* {event.nick} {event.text}"
        line = f"[{when}] <{event.nick}> {body}" if kind is Said else f"[{when}] {body}"
        head = f":{self.factory.server_name} NOTICE {event.room} :"
        budget = ircwire.MAX_MESSAGE - 2 - len(head.encode("utf-8"))
        return "".join(f"{head}{piece}\r\n" for piece in split_text(line, budget))

    def _error_reply(self, kind: str, subject: str, command: str, text: str) -> str:
        """A refusal as the numeric IRC clients expect for it."""
        server = self.factory.server_name
        me = self._me
        subject = subject or "*"
        numeric = {
            "nick-in-use": ("433", subject, "Nickname is already in use"),
            "invalid-nick": ("432", subject, "Erroneous nickname"),
            "no-such-user": ("401", subject, "No such nick/channel"),
            "no-such-room": ("403", subject, "No such channel"),
            "invalid-room": ("403", subject, "No such channel"),
            "too-many-rooms": ("405", subject, "You have joined too many channels"),
            "too-long": ("417", "Input line was too long"),
        }.get(kind)
        if kind == "not-in-room":
            if command in ("Say", "Me"):
                numeric = ("404", subject, "Cannot send to channel")
            else:
                numeric = ("442", subject, "You're not on that channel")
        if kind == "bad-usage" and text == "Not enough parameters":
            numeric = ("461", subject, "Not enough parameters")
        if numeric is None:
            return ircwire.trailing(server, "NOTICE", me, f"! {text}")
        return ircwire.trailing(server, numeric[0], me, *numeric[1:])

    _quit_reason = None

    def close(self, reason: str):
        """C{ERROR :Closing Link: HOST (reason)}, then hang up (after QUIT: its reason)."""
        reason = self._quit_reason or reason
        return self._close_with(
            ircwire.trailing(None, "ERROR", f"Closing Link: {self._host} ({reason})")
            .encode("utf-8", errors="replace")
        )


#: What a client may send before it is registered (anything else gets 451).
_BEFORE_REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})


class IRCChatFactory(StreamChatFactory):
    """Builds one L{IRCChatProtocol} per connection, admitted within the service's limits."""

    protocol_class = IRCChatProtocol

    def __init__(self, hub, registry, clock, admission, limits, gate=None, *,
                 server_name: str, network: str = "chatroom", motd: tuple = ()):
        super().__init__(hub, registry, clock, admission, limits, gate=gate)
        self.server_name = server_name
        self.network = network
        self.motd = tuple(motd)
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(clock.seconds()))
        self._renders: dict = {}

    def render_for(self, caps) -> IRCRender:
        """One renderer per capability set, shared by every client with that set."""
        key = ("server-time" in caps, "batch" in caps, "message-tags" in caps)
        render = self._renders.get(key)
        if render is None:
            render = self._renders[key] = IRCRender(self.server_name, *key)
        return render

    def make_session(self, participant) -> Session:
        return Session(participant, self.hub, self.registry, self.clock, self.limits,
                       lands_in_default_room=False)
