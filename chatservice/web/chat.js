// The chat, without the page: the WebSocket, reconnecting with backoff and resuming,
// the slash commands, and what the page needs to know (rooms, members, messages by id).
// The wire protocol is docs/web-protocol.md.  No DOM here: app.js draws.

export const RECONNECT_FIRST_MS = 1000;
export const RECONNECT_MAX_MS = 30000;
// The most lines the server replays on resuming a room (hub.RESUME_MAX), and the page size
// asked for after it when that many came: catching up never leaves a hole.
export const RESUME_MAX = 1000;
export const CATCH_UP_PAGE = 200;

// Message ids are 63-bit: they travel as strings and compare as BigInts.
export function compareIds(a, b) {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

// A stable colour per nick (ignoring ASCII case), the same in every session.
export function nickHue(nick) {
  let hash = 0;
  for (const ch of nick.toLowerCase()) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

export const HELP = [
  "text: say it in the room (or to the person, in a private conversation)",
  "/me ACTION, /msg NICK TEXT, /nick NEW, /join #ROOM, /part [#ROOM] [REASON]",
  "/rooms [TEXT], /who [#ROOM], /topic [#ROOM] [TEXT], /history [#ROOM] [N]",
  "/quit [REASON], //text sends /text",
];

// One typed line as a protocol message (or {local: text} for the page alone).
// `target` is the open conversation: "#room" or a nick.
export function parseInput(line, target) {
  const room = target && target.startsWith("#") ? target : null;
  const send = (text) =>
    room ? { type: "say", room, text } : { type: "msg", nick: target, text };
  if (!line.startsWith("/")) return line.trim() ? send(line) : null;
  if (line.startsWith("//")) return send(line.slice(1));
  const space = line.indexOf(" ");
  const name = (space < 0 ? line.slice(1) : line.slice(1, space)).toLowerCase();
  const rest = space < 0 ? "" : line.slice(space + 1);
  const words = rest.split(/\s+/).filter(Boolean);
  const roomArg = () => (words[0] && words[0].startsWith("#") ? words.shift() : room);
  switch (name) {
    case "me":
      if (!rest) return { error: "usage: /me ACTION" };
      return room ? { type: "me", room, text: rest } :
        { type: "msg", nick: target, text: rest, action: true };
    case "msg": {
      const nick = words[0];
      const text = rest.slice(rest.indexOf(nick) + (nick || "").length + 1);
      if (!nick || !text) return { error: "usage: /msg NICK TEXT" };
      return { type: "msg", nick, text };
    }
    case "nick":
      return words[0] ? { type: "nick", nick: words[0] } : { error: "usage: /nick NEW" };
    case "join":
      return words[0] ? { type: "join", room: words[0] } : { error: "usage: /join #ROOM" };
    case "part": {
      const r = roomArg();
      if (!r) return { error: "usage: /part #ROOM [REASON]" };
      return { type: "part", room: r, reason: words.join(" ") };
    }
    case "rooms":
      return { type: "rooms", containing: rest.trim() };
    case "who": {
      const r = roomArg();
      return r ? { type: "who", room: r } : { error: "usage: /who #ROOM" };
    }
    case "topic": {
      const r = roomArg();
      if (!r) return { error: "usage: /topic #ROOM [TEXT]" };
      const text = words.join(" ");
      return text ? { type: "topic", room: r, text } : { type: "topic", room: r };
    }
    case "history": {
      const r = roomArg();
      if (!r) return { error: "usage: /history #ROOM [N]" };
      const count = words[0] ? parseInt(words[0], 10) : 20;
      if (!(count > 0)) return { error: "usage: /history [#ROOM] [N]" };
      return { type: "history", room: r, count: Math.min(count, 200) };
    }
    case "quit":
      return { type: "quit", reason: rest };
    case "help":
      return { local: HELP };
    default:
      return { error: `unknown command: /${name} (try /help)` };
  }
}

// A conversation: a room, or private lines with one person.  Messages are kept in id
// order, whatever order they come in (live, replayed on joining, older when scrolling up).
export class Conversation {
  constructor(name) {
    this.name = name;
    this.isRoom = name.startsWith("#");
    this.messages = []; // {id, kind, ...}: id-less ones (notices) go last
    this.ids = new Set();
    this.newestId = null;
    this.members = new Map(); // nick -> via
    this.topic = "";
    this.unread = 0;
    this.joined = false;
    this.oldestRequested = null;
  }

  // Put `message` in id order; -1 if it is there already (a repeat), else where it went.
  // A message without an id (a notice, an error) stays after what had arrived before it.
  add(message) {
    if (message.id) {
      if (this.ids.has(message.id)) return -1;
      this.ids.add(message.id);
      if (!this.newestId || compareIds(message.id, this.newestId) > 0) this.newestId = message.id;
      message.order = message.id;
    } else {
      message.order = this.newestId || "0";
    }
    let lo = 0, hi = this.messages.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareIds(this.messages[mid].order, message.order) > 0) hi = mid;
      else lo = mid + 1;
    }
    this.messages.splice(lo, 0, message);
    return lo;
  }

  // The newest line id seen here: what a reconnect names to get what it missed.
  lastLineId() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i];
      if ((m.kind === "said" || m.kind === "emote") && m.id) return m.id;
    }
    return null;
  }

  oldestLineId() {
    for (const m of this.messages) {
      if ((m.kind === "said" || m.kind === "emote") && m.id) return m.id;
    }
    return null;
  }
}

// The connection: hello, resume after a drop, backoff, and events to the page.
export class Chat extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.nick = null;
    this.conversations = new Map();
    this.state = "offline";
    this.socket = null;
    this.retryMs = RECONNECT_FIRST_MS;
    this.retryTimer = null;
    this.quitting = false;
    this.registered = false;
  }

  conversation(name) {
    const key = name.startsWith("#") ? name.toLowerCase() : "@" + name.toLowerCase();
    let c = this.conversations.get(key);
    if (!c) {
      c = new Conversation(name);
      this.conversations.set(key, c);
    }
    return c;
  }

  rooms() {
    return [...this.conversations.values()].filter((c) => c.isRoom && c.joined);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, detail) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  login(nick) {
    this.nick = nick;
    this.quitting = false;
    const state = this.socket ? this.socket.readyState : WebSocket.CLOSED;
    if (state === WebSocket.OPEN) this.hello();
    else if (state !== WebSocket.CONNECTING) this.connect(); // else onopen says hello
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.setState("connected");
      if (this.nick) this.hello();
    };
    socket.onmessage = (e) => {
      let message;
      try {
        message = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      this.receive(message);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.registered = false;
      for (const c of this.conversations.values()) c.joined = c.joined && c.isRoom;
      if (this.quitting || !this.nick) { // nobody to log in yet: connect on login()
        this.setState("offline");
        return;
      }
      const delay = Math.round(this.retryMs * (0.75 + Math.random() * 0.5));
      this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
      this.setState("reconnecting", { inMs: delay });
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  // Log in; on a reconnect, name every room we were in with the last line we saw there.
  hello() {
    const rooms = {};
    for (const c of this.rooms()) {
      rooms[c.name] = c.lastLineId();
      c.catchUp = rooms[c.name] ? RESUME_MAX : 0; // the server replays at most this many
    }
    const message = { type: "hello", nick: this.nick };
    if (Object.keys(rooms).length) message.rooms = rooms;
    this.send(message);
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  // A typed line: sent, or answered here (help, usage errors).
  input(line, target) {
    const message = parseInput(line, target);
    if (!message) return;
    if (message.error || message.local) {
      this.emit("local", { target, lines: message.local || [message.error],
                           error: !!message.error });
      return;
    }
    if (message.type === "join") {
      const known = this.conversations.get(message.room.toLowerCase());
      const since = known ? known.lastLineId() : null;
      if (since) message.since = since;
    }
    if (message.type === "quit") this.quitting = true;
    if (!this.send(message)) this.emit("local", { target, lines: ["not connected: not sent"],
                                                  error: true });
  }

  olderHistory(room) {
    const c = this.conversation(room);
    const before = c.oldestLineId();
    if (!before || c.oldestRequested === before) return;
    c.oldestRequested = before;
    this.send({ type: "history", room: c.name, count: 50, before });
  }

  line(conversation, message, notify = true) {
    const at = conversation.add(message);
    if (at < 0) return;
    this.emit("message", { conversation, message, at, notify });
  }

  receive(m) {
    switch (m.type) {
      case "registered":
        this.nick = m.nick;
        this.registered = true;
        this.retryMs = RECONNECT_FIRST_MS;
        this.emit("registered", m);
        break;
      case "refusal":
        if (!this.registered && (m.kind === "nick-in-use" || m.kind === "invalid-nick")) {
          this.emit("nick-refused", m);
        } else {
          this.emit("refusal", m);
        }
        break;
      case "room-joined": {
        const c = this.conversation(m.room);
        const back = c.joined; // joined again after a reconnect: the page stays where it is
        c.joined = true;
        c.topic = m.topic;
        for (const nick of m.members) if (!c.members.has(nick)) c.members.set(nick, "");
        this.send({ type: "who", room: m.room });
        this.emit("rooms", { focus: back ? null : c });
        break;
      }
      case "room-parted": {
        const c = this.conversation(m.room);
        c.joined = false;
        c.members.clear();
        this.emit("rooms", { focus: m.current ? this.conversation(m.current) : null });
        break;
      }
      case "who-list": {
        const c = this.conversation(m.room);
        c.members = new Map(m.members.map(([nick, via]) => [nick, via]));
        this.emit("members", { conversation: c });
        break;
      }
      case "said":
      case "emote":
        this.line(this.conversation(m.room), { kind: m.type, id: m.id, time: m.time,
                                               nick: m.nick, text: m.text, notice: m.notice });
        break;
      case "replayed": {
        const e = m.event;
        this.line(this.conversation(e.room), { kind: e.type, id: e.id, time: e.time,
                                               nick: e.nick, text: e.text, replayed: true },
                  false);
        break;
      }
      case "joined":
      case "parted": {
        const c = this.conversation(m.room);
        if (m.type === "joined") c.members.set(m.nick, m.via);
        else c.members.delete(m.nick);
        this.line(c, { kind: m.type, id: m.id, time: m.time, nick: m.nick,
                       text: m.type === "joined" ? "joined" : `left${m.reason ? ` (${m.reason})` : ""}` },
                  false);
        this.emit("members", { conversation: c });
        break;
      }
      case "left":
      case "renamed":
        for (const room of m.rooms) {
          const c = this.conversation(room);
          if (m.type === "left") c.members.delete(m.nick);
          else {
            const via = c.members.get(m.old);
            c.members.delete(m.old);
            c.members.set(m.new, via || "");
          }
          const text = m.type === "left" ? `left (${m.reason})` : `is now known as ${m.new}`;
          this.line(c, { kind: m.type, id: m.id, time: m.time,
                         nick: m.type === "left" ? m.nick : m.old, text }, false);
          this.emit("members", { conversation: c });
        }
        if (m.type === "renamed" && this.nick && m.old.toLowerCase() === this.nick.toLowerCase()) {
          this.nick = m.new;
          this.emit("registered", { nick: m.new });
        }
        break;
      case "topic-changed": {
        const c = this.conversation(m.room);
        c.topic = m.text;
        this.line(c, { kind: "topic", id: m.id, time: m.time, nick: m.nick,
                       text: `set the topic: ${m.text}` }, false);
        this.emit("topic", { conversation: c });
        break;
      }
      case "topic-is": {
        const c = this.conversation(m.room);
        c.topic = m.text;
        this.emit("topic", { conversation: c });
        break;
      }
      case "private":
        this.line(this.conversation(m.sender), { kind: m.action ? "emote" : "said",
                  id: m.id, time: m.time, nick: m.sender, text: m.text });
        break;
      case "private-sent":
        this.line(this.conversation(m.recipient), { kind: m.action ? "emote" : "said",
                  id: m.id, time: m.time, nick: this.nick, text: m.text }, false);
        break;
      case "room-list":
        this.emit("local", { lines: [`${m.rooms.length} rooms:`].concat(
          m.rooms.map(([name, count, topic]) => `${name} (${count})${topic ? ": " + topic : ""}`)) });
        break;
      case "notice":
        this.emit("local", { lines: [m.text] });
        break;
      case "help-text":
        this.emit("local", { lines: m.lines });
        break;
      case "history-start":
        this.conversation(m.room).replayCount = m.count;
        break;
      case "history-end": {
        // Catching up after a reconnect: a full page means there may be more.
        const c = this.conversation(m.room);
        if (c.catchUp && c.replayCount >= c.catchUp && c.lastLineId()) {
          c.catchUp = CATCH_UP_PAGE;
          this.send({ type: "history", room: c.name, count: CATCH_UP_PAGE,
                      after: c.lastLineId() });
        } else {
          c.catchUp = 0;
        }
        break;
      }
      default:
        break; // welcome, current-room, tag-message: nothing to draw
    }
  }
}
