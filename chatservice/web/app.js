// The page: draws what chat.js knows.  Every text from users goes in as text
// (textContent), never as HTML.
import { Chat, nickHue } from "./chat.js";

const $ = (id) => document.getElementById(id);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const chat = new Chat(`${scheme}//${location.host}/ws`);
let current = null; // the Conversation shown

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("aria-") || key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function when(seconds) {
  const date = new Date(seconds * 1000);
  const hhmm = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const today = new Date().toDateString() === date.toDateString();
  return today ? hhmm : `${date.toLocaleDateString()} ${hhmm}`;
}

function nickSpan(nick) {
  return el("span", { class: "nick", text: nick, style: `color: hsl(${nickHue(nick)} 65% 35%)` });
}

function messageItem(m) {
  const li = el("li", { "data-kind": m.kind });
  if (m.id) li.dataset.id = m.id;
  if (m.time) {
    li.append(el("time", { text: when(m.time), dateTime: new Date(m.time * 1000).toISOString() }),
              " ");
  }
  if (m.kind === "said") {
    li.append(nickSpan(m.nick), document.createTextNode(": " + m.text));
  } else if (m.kind === "emote") {
    li.className = "emote";
    li.append("* ", nickSpan(m.nick), document.createTextNode(" " + m.text));
  } else if (m.kind === "system" || m.kind === "error") {
    li.className = m.kind;
    li.append(document.createTextNode(m.text));
  } else { // joined, parted, left, renamed, topic: quietly
    li.className = "quiet";
    li.append(document.createTextNode(`${m.nick} ${m.text}`));
  }
  return li;
}

function drawLog() {
  const log = $("log");
  log.replaceChildren(...(current ? current.messages.map(messageItem) : []));
  log.scrollTop = log.scrollHeight;
}

function drawNav() {
  const rooms = [], privates = [];
  for (const c of chat.conversations.values()) {
    if (c.isRoom && !c.joined) continue;
    const button = el("button", { type: "button", "aria-current": String(c === current) },
                      el("span", { text: c.name }));
    if (c.unread) {
      button.append(el("span", { class: "unread", text: String(c.unread),
                                 "aria-label": `${c.unread} unread` }));
    }
    button.addEventListener("click", () => show(c));
    (c.isRoom ? rooms : privates).push(el("li", {}, button));
  }
  $("rooms").replaceChildren(...rooms);
  $("privates").replaceChildren(...privates);
}

function drawMembers() {
  const list = $("members");
  if (!current || !current.isRoom) {
    list.replaceChildren();
    return;
  }
  const nicks = [...current.members.keys()].sort((a, b) => a.localeCompare(b));
  list.replaceChildren(...nicks.map((nick) => {
    const button = el("button", { type: "button", title: `Talk to ${nick} privately` },
                      nickSpan(nick));
    button.addEventListener("click", () => show(chat.conversation(nick), true));
    return el("li", {}, button);
  }));
}

function show(conversation, focusInput = false) {
  current = conversation;
  conversation.unread = 0;
  $("title").textContent = conversation.name;
  $("topic").textContent = conversation.isRoom ? conversation.topic : "private conversation";
  $("input").setAttribute("aria-label", `Message to ${conversation.name}`);
  $("older").hidden = !conversation.isRoom;
  drawLog();
  drawNav();
  drawMembers();
  if (focusInput) $("input").focus();
}

function note(lines, error = false) {
  const target = current || chat.conversation("#lobby");
  for (const text of lines) chat.line(target, { kind: error ? "error" : "system", text });
}

chat.addEventListener("state", ({ detail }) => {
  if (detail.state !== "connected") stopNickRetry();
  const state = $("state");
  state.dataset.state = detail.state;
  state.textContent = detail.state === "reconnecting"
    ? `reconnecting in ${Math.ceil(detail.inMs / 1000)} s` : detail.state;
});

// Back after a drop while the old connection still holds the nick (the server has not seen
// it go yet): try again every 2 s for a minute (the server's ping timeout), then ask.
const NICK_RETRY_MS = 2000, NICK_RETRIES = 30;
let nickRetries = 0, nickTimer = null;
function stopNickRetry() {
  clearTimeout(nickTimer);
  nickTimer = null;
}

chat.addEventListener("registered", ({ detail }) => {
  stopNickRetry();
  nickRetries = 0;
  $("me").textContent = detail.nick;
  if (!$("login").hidden) {
    $("login").hidden = true;
    $("chat").hidden = false;
    $("input").focus();
  }
});

chat.addEventListener("nick-refused", ({ detail }) => {
  if ($("login").hidden && nickRetries < NICK_RETRIES) {
    nickRetries += 1;
    if (nickRetries === 1) note([`${detail.text}; trying again`], true);
    stopNickRetry();
    nickTimer = setTimeout(() => { nickTimer = null; chat.hello(); }, NICK_RETRY_MS);
    return;
  }
  stopNickRetry();
  nickRetries = 0;
  $("chat").hidden = true;
  $("login").hidden = false;
  $("nick-error").textContent = detail.text;
  $("nick").focus();
});

chat.addEventListener("refusal", ({ detail }) => note([detail.text], true));
chat.addEventListener("local", ({ detail }) => note(detail.lines, detail.error));

chat.addEventListener("message", ({ detail }) => {
  const { conversation, message, at, notify } = detail;
  if (conversation === current) {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const before = log.scrollHeight;
    const item = messageItem(message);
    log.insertBefore(item, log.children[at] || null);
    if (at === 0 && log.children.length > 1) log.scrollTop += log.scrollHeight - before;
    else if (atBottom) log.scrollTop = log.scrollHeight;
  } else if (notify) {
    conversation.unread += 1;
    drawNav();
  }
  if (!current && conversation.isRoom) show(conversation);
  if (!conversation.isRoom && !chat.conversations.has("@" + conversation.name.toLowerCase())) {
    drawNav();
  }
  drawNav();
});

chat.addEventListener("rooms", ({ detail }) => {
  if (detail.focus && (!current || !current.joined || detail.focus !== current)) {
    show(detail.focus);
  } else if (current && current.isRoom && !current.joined) {
    const next = chat.rooms()[0];
    if (next) show(next);
  }
  drawNav();
});

chat.addEventListener("members", ({ detail }) => {
  if (detail.conversation === current) drawMembers();
});

chat.addEventListener("topic", ({ detail }) => {
  if (detail.conversation === current) $("topic").textContent = current.topic;
});

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  $("nick-error").textContent = "";
  chat.login($("nick").value.trim());
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("input");
  if (!input.value || !current) return;
  chat.input(input.value, current.name);
  input.value = "";
});

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  let room = $("join-room").value.trim();
  if (!room) return;
  if (!room.startsWith("#")) room = "#" + room;
  chat.input(`/join ${room}`, current ? current.name : null);
  $("join-room").value = "";
});

// Scrolling up to the top of a room loads older lines (not the page's own scrolling down).
let lastScrollTop = 0;
$("log").addEventListener("scroll", () => {
  const top = $("log").scrollTop;
  const up = top < lastScrollTop;
  lastScrollTop = top;
  if (up && top < 40 && current && current.isRoom) chat.olderHistory(current.name);
});
// The same without a scroll (keyboard, screen reader, or a room whose lines fit the pane).
$("older").addEventListener("click", () => {
  if (current && current.isRoom) chat.olderHistory(current.name);
});

$("show-nav").addEventListener("click", () => {
  const lists = $("nav-lists");
  lists.hidden = !lists.hidden;
  $("show-nav").setAttribute("aria-expanded", String(!lists.hidden));
});

// At phone width the room lists fold behind their button.
if (matchMedia("(max-width: 700px)").matches) $("nav-lists").hidden = true;
chat.connect();
$("nick").focus();
