# -*- test-case-name: tests.test_telnet -*-
"""The telnet side of the TCP line protocol: commands, option refusals, line ends, erasing.

A telnet user's bytes are an RFC 854 stream: data, with commands that start
with IAC (0xFF).  L{TelnetDecoder} turns that stream into plain line data for
the line protocol (every line end a single LF) and says what to answer.  It
is pure: no transport, no clock, no logging, so every case is a unit test.

Why not C{twisted.conch.telnet.Telnet}: its parser runs a Python loop over
every byte of every read, including the plain lines of nc users who never
send a telnet command, and it raises on an unknown command byte (which drops
the connection).  Here a read without IAC costs a couple of C-speed scans;
only the commands themselves are walked in Python.  And its option table
keeps a state per option: once it has agreed to TIMING-MARK, the next
C{DO TIMING-MARK} is "already enabled" and goes unanswered, while telnet
sends one on every Ctrl-C and waits for each answer.

What the decoder does, and why:

 - Options (RFC 1143, the Q method, for a side that never asks for any
   option): every option of ours and the peer's stays disabled.  C{DO x} is
   answered C{WONT x} and C{WILL x} is answered C{DONT x}; C{WONT x} and
   C{DONT x} confirm what already holds, so they are never answered.  We
   never send a request of our own, so no exchange can loop.  Refusing keeps
   telnet in its line-by-line mode, with local echo and local line editing:
   exactly what a line chat wants.
 - C{DO TIMING-MARK} (RFC 860) is answered C{WILL TIMING-MARK}, every time.
   On Ctrl-C telnet sends C{IAC IP IAC DO TIMING-MARK} and throws away all
   output until the answer comes; without one that user sees nothing again.
   The answer leaves the option disabled, as RFC 860 says.
 - IP (interrupt, Ctrl-C) and EL (erase line) discard the line being typed,
   as a terminal's Ctrl-C and kill character do; lines already complete are
   kept.  EC (erase character) erases one character, as backspace does.  AO,
   BRK, SUSP, AYT, DM, NOP, GA, EOR and unknown command bytes are read and
   ignored: none of them may break the connection.  (telnet follows BRK, its
   Ctrl-\\, and SUSP, its Ctrl-Z, with C{DO TIMING-MARK} too, and that is
   answered.)
 - Subnegotiations (C{IAC SB ... IAC SE}) are read and thrown away without
   being stored; one that runs past L{MAX_SUBNEGOTIATION} bytes is abandoned
   and the bytes after it are data again, so a broken client is not silenced
   forever.
 - C{IAC IAC} is a literal 0xFF data byte (which UTF-8 never contains, so
   the line protocol shows it as U+FFFD).
 - Line ends: CR LF, CR NUL and LF each end exactly one line.  A CR that is
   the last byte of a read is held until the next byte says what it is.  A CR
   followed by anything else is kept as data (the session scrubs it), which
   is what the line protocol did before this module.

Backspace (0x08), DEL (0x7f) and EC are applied per complete line by
L{erase}, on characters rather than bytes, because a line may arrive in
several reads and a character in several bytes.
"""

from dataclasses import dataclass

# Commands (RFC 854).
IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
GA = 249
EL = 248
EC = 247
AYT = 246
AO = 245
IP = 244
BRK = 243
DM = 242
NOP = 241
SE = 240
EOR = 239  # RFC 885
ABORT, SUSP, EOF = 238, 237, 236  # RFC 1184 (telnet sends SUSP for Ctrl-Z)

#: The one option we agree to, and only as RFC 860 allows: an answer, never a state.
TIMING_MARK = 6

#: Bytes of one subnegotiation read before it is abandoned.  Real ones carry a
#: terminal type (RFC 1091, tens of bytes), a window size (RFC 1073, 4 to 8
#: bytes) or some environment variables (RFC 1572, hundreds): 4096 is far above
#: any of them and is the bound Twisted's own telnet parser uses.  Nothing is
#: stored, so the bound is about recovering from a broken client, not memory.
MAX_SUBNEGOTIATION = 4096

#: Commands and answers named per decoded read, for the protocol's debug log;
#: more are counted but not named.
MAX_NAMED = 16

#: Backspace, and what the decoder turns an EC (erase character) into.
BACKSPACE = b"\x08"
DELETE = b"\x7f"

_COMMAND_NAMES = {
    GA: "GA", EL: "EL", EC: "EC", AYT: "AYT", AO: "AO", IP: "IP", BRK: "BRK",
    DM: "DM", NOP: "NOP", SE: "SE", EOR: "EOR", SB: "SB", ABORT: "ABORT", SUSP: "SUSP",
    EOF: "EOF",
}
_VERB_NAMES = {DO: "DO", DONT: "DONT", WILL: "WILL", WONT: "WONT"}
_OPTION_NAMES = {
    0: "BINARY", 1: "ECHO", 3: "SUPPRESS-GO-AHEAD", 5: "STATUS", 6: "TIMING-MARK",
    24: "TERMINAL-TYPE", 31: "NAWS", 32: "TERMINAL-SPEED", 33: "TOGGLE-FLOW-CONTROL",
    34: "LINEMODE", 35: "X-DISPLAY-LOCATION", 36: "ENVIRON", 39: "NEW-ENVIRON",
}

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


def option_name(option: int) -> str:
    """A readable name for a telnet option number, for logs."""
    return _OPTION_NAMES.get(option, str(option))


@dataclass(frozen=True, slots=True)
class Decoded:
    """
    What one read of a telnet stream comes to.

    @ivar data: line data: every line end is one LF, commands are gone, an
        EC is a backspace.
    @ivar replies: bytes to send back (refusals, timing marks), in order.
    @ivar kill: an IP or EL came before any line end in C{data}: the line
        the receiver had begun before this read is to be discarded.
    @ivar commands: names of the commands received, for a debug log (at most
        L{MAX_NAMED}).
    @ivar answers: names of the answers in C{replies} (at most L{MAX_NAMED}).
    @ivar abandoned: a subnegotiation ran past L{MAX_SUBNEGOTIATION} bytes.
    """

    data: bytes
    replies: bytes = b""
    kill: bool = False
    commands: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    abandoned: bool = False


class TelnetDecoder:
    """
    The state of one connection's telnet stream between reads.

    Feed every read to L{decode}, except while L{idle}: then a read with no
    IAC may go to the cheaper L{line_ends}, and one with neither IAC nor CR
    is already line data (nc sends only that) and needs no call at all, which
    keeps nc's hot path free of any telnet cost.

    @ivar idle: no command, subnegotiation or CR is pending from the last read.
    """

    # One per connection: slots keep it small (about 100 bytes instead of 400).
    __slots__ = ("_max_sub", "_state", "_verb", "_sub_length", "_cr", "idle")

    def __init__(self, max_subnegotiation: int = MAX_SUBNEGOTIATION) -> None:
        self._max_sub = max_subnegotiation
        self._state = _DATA
        self._verb = 0
        self._sub_length = 0
        self._cr = False  # the last data byte was a CR whose meaning waits for the next
        self.idle = True

    def line_ends(self, data: bytes) -> bytes:
        """
        The line data of a read that holds no IAC, while L{idle}.

        The cheap path for a telnet user's usual read, C{text CR LF}: no
        L{Decoded} is built, as there is nothing to answer.
        """
        if data[-1:] == b"\r":  # its meaning waits for the next read
            self._cr = True
            self.idle = False
            data = data[:-1]
        return data.replace(b"\r\n", b"\n").replace(b"\r\x00", b"\n")

    def decode(self, data: bytes) -> Decoded:
        """Turn one read into line data and the answers it needs."""
        if self._state == _DATA and b"\xff" not in data:
            data = self._text(data)
            self.idle = not self._cr
            return Decoded(data)
        out: list[bytes] = []
        replies: list[bytes] = []
        commands: list[str] = []
        answers: list[str] = []
        kill = abandoned = False
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                iac = data.find(b"\xff", pos)
                stop = end if iac < 0 else iac
                if stop > pos:
                    out.append(self._text(data[pos:stop]))
                if iac < 0:
                    break
                pos = iac + 1
                self._state = _COMMAND
            elif state == _COMMAND:
                byte = data[pos]
                pos += 1
                self._state = _DATA
                if byte == IAC:
                    out.append(self._text(b"\xff"))
                    continue
                if byte in _VERB_NAMES:
                    self._verb = byte
                    self._state = _OPTION
                    continue
                if len(commands) < MAX_NAMED:
                    commands.append(_COMMAND_NAMES.get(byte, f"command {byte}"))
                if byte == SB:
                    self._state = _SUB
                    self._sub_length = 0
                elif byte == IP or byte == EL:
                    self._cr = False  # a held CR belonged to the discarded line
                    done = b"".join(out)
                    newline = done.rfind(b"\n")
                    out = [done[: newline + 1]]
                    if newline < 0:
                        kill = True
                elif byte == EC:
                    out.append(self._text(BACKSPACE))
            elif state == _OPTION:
                option = data[pos]
                pos += 1
                self._state = _DATA
                verb = self._verb
                if len(commands) < MAX_NAMED:
                    commands.append(f"{_VERB_NAMES[verb]} {option_name(option)}")
                answer = self._answer(verb, option)
                if answer is not None:
                    replies.append(bytes((IAC, answer, option)))
                    if len(answers) < MAX_NAMED:
                        answers.append(f"{_VERB_NAMES[answer]} {option_name(option)}")
            elif state == _SUB:
                iac = data.find(b"\xff", pos)
                stop = end if iac < 0 else iac
                room = max(0, self._max_sub - self._sub_length)
                if stop - pos > room:
                    # Abandon it: what follows the bound is data again.
                    pos += room
                    self._state = _DATA
                    abandoned = True
                    continue
                self._sub_length += stop - pos
                pos = stop
                if iac >= 0:
                    pos += 1
                    self._state = _SUB_IAC
            else:  # _SUB_IAC
                byte = data[pos]
                pos += 1
                if byte == SE:
                    self._state = _DATA
                else:  # IAC IAC is a data byte of the subnegotiation; anything else is read past
                    self._sub_length += 1
                    self._state = _SUB
        self.idle = self._state == _DATA and not self._cr
        return Decoded(
            b"".join(out), b"".join(replies), kill, tuple(commands), tuple(answers), abandoned
        )

    @staticmethod
    def _answer(verb: int, option: int) -> int | None:
        """RFC 1143 for a side that keeps every option disabled; RFC 860 for timing marks."""
        if verb == DO:
            return WILL if option == TIMING_MARK else WONT
        if verb == WILL:
            return DONT
        return None  # WONT and DONT confirm the state we are in: never answered

    def _text(self, data: bytes) -> bytes:
        """Data bytes with CR LF and CR NUL made LF; a final CR waits for the next byte."""
        if self._cr:
            self._cr = False
            data = b"\r" + data
        if data[-1:] == b"\r":
            self._cr = True
            data = data[:-1]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r\x00", b"\n")
        return data


def erase(text: str) -> str:
    """
    Apply backspace (0x08) and DEL (0x7f) in one received line.

    Each erases the character before it, a whole character however many
    UTF-8 bytes it took; at the start of the line it does nothing.  A user
    whose client sends its editing keys (nc on a raw terminal, telnet in
    character mode) gets the line they see, not the keys they pressed.
    """
    kept: list[str] = []
    for char in text:
        if char == "\x08" or char == "\x7f":
            if kept:
                kept.pop()
        else:
            kept.append(char)
    return "".join(kept)
