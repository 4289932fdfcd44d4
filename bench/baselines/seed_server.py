"""A seed-style chat server: the naive design chatroom is measured against.

Plain stdlib, written the way the project's seed was: one thread per TCP client, a dict of
sockets, and every line sent with ``sendall`` to each other client while holding one lock.
It speaks the same line protocol as chatroom's TCP side (greeting, nickname line, then
``NICK: text`` lines to everyone else in the sender's current room; ``* NICK joined`` /
``* NICK left (...)``). Rooms are the least the benchmark's many-rooms shape needs: everyone
starts in ``#lobby``; ``/join #room`` joins a room and makes it current, ``/part #room`` leaves
one; each room is a dict of sockets, still sent to one ``sendall`` at a time under the one lock.

Its UDP side is the seed's too: the first datagram from an address is that user's nickname,
later datagrams are lines of text, and each line is sent three times to every other known
address "to improve delivery chances" -- no acknowledgements, no sequence numbers.

Run: ``python -m bench.baselines.seed_server --tcp PORT --udp PORT [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading

GREETING = b"* welcome to chatroom, what is your nickname?\r\n"
NICK_RE = re.compile(r"^[A-Za-z_\[\]{}\\|^][A-Za-z0-9_\-\[\]{}\\|^]{0,31}$")
UDP_COPIES = 3  # the seed's "broadcast several times" for delivery chances


LOBBY = "#lobby"


class SeedChat:
    """Shared state: nickname -> socket and room -> members, guarded by one lock for every send."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, socket.socket] = {}
        self.rooms: dict[str, dict[str, socket.socket]] = {LOBBY: {}}

    def broadcast(self, line: bytes, exclude: str | None, room: str | None = None) -> None:
        """Send one line to every client of ``room`` (None: everyone) but ``exclude``."""
        with self.lock:
            members = self.clients if room is None else self.rooms.get(room, {})
            dead = []
            for nick, sock in members.items():
                if nick == exclude:
                    continue
                try:
                    sock.sendall(line)
                except OSError:
                    dead.append(nick)
            for nick in dead:
                members.pop(nick, None)

    def command(self, nick: str, sock: socket.socket, text: str, current: str | None) -> str | None:
        """``/join #room`` or ``/part #room``; return the room the user's lines go to now."""
        verb, _, room = text.partition(" ")
        room = room.strip()
        if verb == "/join" and room.startswith("#"):
            with self.lock:
                self.rooms.setdefault(room, {})[nick] = sock
            sock.sendall(("* you joined %s\r\n" % room).encode())
            self.broadcast(("* %s joined\r\n" % nick).encode(), exclude=nick, room=room)
            return room
        if verb == "/part" and room.startswith("#"):
            with self.lock:
                self.rooms.get(room, {}).pop(nick, None)
            if current == room:
                current = None
            sock.sendall(("* you left %s; your lines go to %s\r\n" % (room, current)).encode())
            self.broadcast(("* %s left the room\r\n" % nick).encode(), exclude=nick, room=room)
            return current
        sock.sendall(b"! unknown command\r\n")
        return current

    def serve_client(self, sock: socket.socket) -> None:
        """One thread per connection: ask for a nickname, then relay each line to the others."""
        nick = None
        room = LOBBY
        try:
            sock.sendall(GREETING)
            reader = sock.makefile("rb")
            for raw in reader:
                text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                if nick is None:
                    candidate = text.strip()
                    if not NICK_RE.match(candidate):
                        sock.sendall(b"! invalid nickname\r\n" + GREETING)
                        continue
                    with self.lock:
                        taken = candidate in self.clients
                        if not taken:
                            self.clients[candidate] = sock
                            self.rooms[LOBBY][candidate] = sock
                    if taken:
                        sock.sendall(b"! nickname in use\r\n" + GREETING)
                        continue
                    nick = candidate
                    sock.sendall(("* you are %s; say something\r\n" % nick).encode())
                    self.broadcast(("* %s joined\r\n" % nick).encode(), exclude=nick, room=LOBBY)
                    continue
                if text.startswith("/"):
                    room = self.command(nick, sock, text, room)
                    continue
                if room is not None:
                    self.broadcast(("%s: %s\r\n" % (nick, text)).encode("utf-8"), exclude=nick,
                                   room=room)
        except OSError:
            pass
        finally:
            if nick is not None:
                with self.lock:
                    self.clients.pop(nick, None)
                    for members in self.rooms.values():
                        members.pop(nick, None)
                self.broadcast(("* %s left (quit)\r\n" % nick).encode(), exclude=None)
            try:
                sock.close()
            except OSError:
                pass

    def serve_tcp(self, listener: socket.socket) -> None:
        """Accept forever, one new thread per client."""
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=self.serve_client, args=(sock,), daemon=True).start()


def serve_udp(sock: socket.socket) -> None:
    """The seed's UDP loop: remember every address, resend each line three times to the others."""
    peers: dict[tuple, str] = {}
    while True:
        data, addr = sock.recvfrom(2048)
        nick = peers.get(addr)
        if nick is None:
            nick = data.decode("utf-8", "replace").strip() or "anon"
            peers[addr] = nick
            sock.sendto(("* you are %s; say something" % nick).encode(), addr)
            continue
        line = ("%s: %s" % (nick, data.decode("utf-8", "replace").rstrip("\r\n"))).encode()
        for other in list(peers):
            if other == addr:
                continue
            for _ in range(UDP_COPIES):
                try:
                    sock.sendto(line, other)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> None:
    """Listen on the given TCP and UDP ports and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tcp", type=int, required=True)
    parser.add_argument("--udp", type=int, default=0)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.tcp))
    listener.listen(4096)
    if args.udp:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((args.host, args.udp))
        threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
    SeedChat().serve_tcp(listener)


if __name__ == "__main__":
    main()
