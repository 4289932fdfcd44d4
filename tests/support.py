"""
Helpers for tests that use real sockets and real processes on trial's reactor.

Nothing here sleeps: every wait is on an event (a line arriving, a connection
closing, a process exiting) and every wait is bounded by a timeout on the
reactor it runs on, so a broken server fails a test instead of hanging it.

 - L{free_port}: a port nobody listens on right now (bind port 0, close).
 - L{LineClient}: a raw TCP user, as nc or telnet would be, that sends bytes
   as given and reads the server's CRLF lines.
 - L{ProcessWatcher}: a child process's output and exit, with waits on a
   line of its output and on its exit.
 - L{start_chat_server}: the real service from C{tap.makeService}, listening
   on 127.0.0.1 port 0 on the given reactor, and the port it got.
"""

from __future__ import annotations

import os
import re
import socket
import sys

from twisted.internet import defer, endpoints, error
from twisted.internet.protocol import ProcessProtocol, Protocol

#: Seconds any single wait may take before the test fails.  Generous, since a
#: wait ends as soon as its event happens; it only bounds a broken run.
WAIT = 10.0

#: The project root (holds chatservice/ and tests/).
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WaitTimedOut(AssertionError):
    """A bounded wait ran out; the message says what had arrived by then."""


class ClosedWhileWaiting(AssertionError):
    """The connection or process ended before what a test waited for arrived."""


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """
    A port on C{host} that was free a moment ago (bind port 0, read it, close).

    Another process may take it before the caller binds it; callers that
    cannot listen on port 0 themselves retry once with a new port.

    @param kind: C{socket.SOCK_STREAM} for TCP, C{socket.SOCK_DGRAM} for UDP.
    """
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Waiters:
    """Deferreds waiting for a condition on some growing state, each bounded."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self._waiting: list[tuple[object, defer.Deferred]] = []

    def wait(self, check, timeout: float, describe) -> defer.Deferred:
        """
        Fire with C{check()}'s value once it is not None.

        @param check: called now and after every change; returns None to go
            on waiting, or the value to fire with.
        @param describe: called on timeout; returns what had arrived, for the message.
        """
        value = check()
        if value is not None:
            return defer.succeed(value)
        entry = None

        def cancel(d):
            if entry in self._waiting:
                self._waiting.remove(entry)

        d = defer.Deferred(cancel)
        entry = (check, d)
        self._waiting.append(entry)

        def timed_out(result, seconds):
            raise WaitTimedOut(f"waited {seconds}s in vain; {describe()}")

        d.addTimeout(timeout, self._clock, onTimeoutCancel=timed_out)
        return d

    def changed(self) -> None:
        """Re-check every waiter; fire those whose condition now holds."""
        for entry in list(self._waiting):
            check, d = entry
            value = check()
            if value is not None and entry in self._waiting:
                self._waiting.remove(entry)
                d.callback(value)

    def fail_all(self, make_error) -> None:
        """The source ended: fail everyone still waiting."""
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(make_error())


class LineClient(Protocol):
    """
    A raw TCP chat user, as nc (LF) or telnet (CRLF) would be.

    It sends exactly the bytes it is given and splits what it receives on LF.
    A line the server ended with CRLF is kept without its line end; a line
    ended with a bare LF keeps a visible C{"\\n"} so exact comparisons fail.

    @ivar lines: every line received so far, decoded as UTF-8.
    @ivar raw: every byte received so far.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self.lines: list[str] = []
        self.raw = b""
        self._partial = b""
        self._read = 0
        self._waiters = Waiters(clock)
        self._close_waiters = Waiters(clock)
        self.closed = False

    # -- the protocol ------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for line in complete:
            if line.endswith(b"\r"):
                line = line[:-1]
            else:
                line += b"\n"
            self.lines.append(line.decode("utf-8", errors="backslashreplace"))
        if complete:
            self._waiters.changed()

    def connectionLost(self, reason) -> None:
        self.closed = True
        self._waiters.changed()
        self._waiters.fail_all(
            lambda: ClosedWhileWaiting(f"connection closed; {self._describe()}")
        )
        self._close_waiters.changed()

    # -- what tests call ---------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write C{data} to the server exactly as given."""
        self.transport.write(data)

    def _describe(self) -> str:
        return (
            f"unread lines: {self.lines[self._read:]!r}; "
            f"partial line: {self._partial!r}; closed: {self.closed}"
        )

    def read_lines(self, count: int, timeout: float = WAIT) -> defer.Deferred:
        """Fire with the next C{count} unread lines (a list), and mark them read."""

        def check():
            if len(self.lines) - self._read >= count:
                got = self.lines[self._read : self._read + count]
                self._read += count
                return got
            return None

        return self._waiters.wait(check, timeout, self._describe)

    def next_line(self, timeout: float = WAIT) -> defer.Deferred:
        """Fire with the next unread line, and mark it read."""
        return self.read_lines(1, timeout).addCallback(lambda lines: lines[0])

    def read_until(self, line: str, timeout: float = WAIT) -> defer.Deferred:
        """
        Fire with the unread lines up to and including the first equal to
        C{line} (a list), and mark them read.
        """

        def check():
            try:
                end = self.lines.index(line, self._read)
            except ValueError:
                return None
            got = self.lines[self._read : end + 1]
            self._read = end + 1
            return got

        return self._waiters.wait(
            check, timeout, lambda: f"looking for {line!r}; {self._describe()}"
        )

    def unread(self) -> list[str]:
        """Lines received and not yet read (does not mark them read)."""
        return self.lines[self._read :]

    def wait_closed(self, timeout: float = WAIT) -> defer.Deferred:
        """Fire once the connection is closed (by either side)."""
        return self._close_waiters.wait(
            lambda: True if self.closed else None, timeout, self._describe
        )

    def close(self, timeout: float = WAIT) -> defer.Deferred:
        """Hang up (if still connected); fire once the connection is gone."""
        if not self.closed:
            self.transport.loseConnection()
        return self.wait_closed(timeout)

    def abort(self, timeout: float = WAIT) -> defer.Deferred:
        """Hang up abruptly (RST, no goodbye); fire once the connection is gone."""
        if not self.closed:
            self.transport.abortConnection()
        return self.wait_closed(timeout)


#: The first line the server sends a new TCP user, and the last line of its welcome.
GREETING = "* welcome to chatroom, what is your nickname?"
HELP_HINT = "* type /help for commands"


@defer.inlineCallbacks
def log_in(user: "LineClient", nick: str, line_end: bytes = b"\n"):
    """Answer C{user}'s greeting with C{nick} and read its welcome; fire with C{user}."""
    greeting = yield user.next_line()
    if greeting != GREETING:
        raise AssertionError(f"expected the greeting, got {greeting!r}")
    user.send(nick.encode() + line_end)
    yield user.read_until(HELP_HINT)
    return user


@defer.inlineCallbacks
def line_user(case, reactor, port: int, nick: str):
    """A L{LineClient} logged in as C{nick} on C{port}, hung up when C{case} ends."""
    user = yield connect(reactor, port)
    case.addCleanup(user.close)
    yield log_in(user, nick)
    return user


def connect(reactor, port: int, host: str = "127.0.0.1", timeout: float = WAIT):
    """
    Connect a L{LineClient} to C{host}:C{port} on C{reactor}.

    @return: a Deferred firing with the connected L{LineClient}.
    """
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    d = endpoints.connectProtocol(endpoint, LineClient(reactor))
    d.addTimeout(timeout, reactor)
    return d


class ProcessWatcher(ProcessProtocol):
    """
    A child process's output and exit.

    @ivar out: everything it wrote to stdout.
    @ivar err: everything it wrote to stderr.
    @ivar output: both, in the order they arrived (what a log reader sees).
    @ivar exit_code: its exit code once ended (None if killed by a signal).
    @ivar signal: the signal that ended it, if any.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self.out = b""
        self.err = b""
        self.output = b""
        self.ended = False
        self.exit_code = None
        self.signal = None
        self._output_waiters = Waiters(clock)
        self._exit_waiters = Waiters(clock)

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self.output += data
        self._output_waiters.changed()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self.output += data
        self._output_waiters.changed()

    def processEnded(self, reason) -> None:
        self.ended = True
        self.exit_code = reason.value.exitCode
        self.signal = reason.value.signal
        self._output_waiters.changed()
        self._output_waiters.fail_all(
            lambda: ClosedWhileWaiting(f"process ended; {self._describe()}")
        )
        self._exit_waiters.changed()

    def _describe(self) -> str:
        return (
            f"ended: {self.ended} (code {self.exit_code}, signal {self.signal}); "
            f"stdout: {self.out!r}; stderr: {self.err!r}"
        )

    def wait_for_output(self, pattern: bytes, timeout: float = WAIT) -> defer.Deferred:
        """Fire with the first match of regex C{pattern} in the combined output."""
        compiled = re.compile(pattern)
        return self._output_waiters.wait(
            lambda: compiled.search(self.output),
            timeout,
            lambda: f"looking for {pattern!r}; {self._describe()}",
        )

    def wait_for_exit(self, timeout: float = WAIT) -> defer.Deferred:
        """Fire with the exit code once the process has ended (None if signalled)."""

        def check():
            if not self.ended:
                return None
            return (self.exit_code,)

        d = self._exit_waiters.wait(check, timeout, self._describe)
        return d.addCallback(lambda box: box[0])

    def kill(self, timeout: float = WAIT) -> defer.Deferred:
        """SIGKILL the process if it still runs; fire once it has ended."""
        if not self.ended:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
        return self.wait_for_exit(timeout)


def spawn(reactor, argv: list[str], path: str | None = None, env: dict | None = None):
    """
    Start C{argv} as a child of C{reactor}, watched by a L{ProcessWatcher}.

    The child gets this environment plus C{env}, unbuffered output, and the
    project root on C{PYTHONPATH} (so C{-m chatservice...} runs this tree).
    """
    environment = dict(os.environ)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONPATH"] = os.pathsep.join(
        [PROJECT_ROOT] + ([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else [])
    )
    environment.update(env or {})
    watcher = ProcessWatcher(reactor)
    # Not the project folder: a twistd started here would create its history file there.
    reactor.spawnProcess(watcher, argv[0], argv, env=environment, path=path or scratch_folder())
    return watcher


_SCRATCH: list[str] = []


def scratch_folder() -> str:
    """A folder for this test run's stray files (a default history file), removed at exit."""
    if not _SCRATCH:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="chatroom-tests-")
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.append(folder)
    return _SCRATCH[0]


def client_argv(*args: str) -> list[str]:
    """The bundled client from this source tree, as a command line."""
    return [sys.executable, "-m", "chatservice.client", *args]


class ListenRecorder:
    """Passes everything to a reactor, and keeps the ports the service opens."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.tcp_ports: list = []
        self.udp_ports: list = []
        self.ssl_ports: list = []

    def listenTCP(self, *args, **kwargs):
        port = self._reactor.listenTCP(*args, **kwargs)
        self.tcp_ports.append(port)
        return port

    def listenUDP(self, *args, **kwargs):
        port = self._reactor.listenUDP(*args, **kwargs)
        self.udp_ports.append(port)
        return port

    def listenSSL(self, *args, **kwargs):
        port = self._reactor.listenSSL(*args, **kwargs)
        self.ssl_ports.append(port)
        return port

    def __getattr__(self, name):
        return getattr(self._reactor, name)


def start_chat_server_with_irc(reactor, *extra_options: str):
    """
    L{start_chat_server} with IRC on too (127.0.0.1, port 0).

    @return: C{(service, tcp_port, irc_port)}.
    """
    from chatservice import tap

    options = tap.Options()
    if "--history" not in extra_options:
        extra_options = (*extra_options, "--history", "none")
    options.parseOptions(
        ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off",
         "--irc", "tcp:0:interface=127.0.0.1", "--web", "off", *extra_options]
    )
    recorder = ListenRecorder(reactor)
    service = tap.makeService(options, reactor=recorder)
    service.startService()
    tcp, irc = recorder.tcp_ports
    return service, tcp.getHost().port, irc.getHost().port


def start_chat_server(reactor, *extra_options: str):
    """
    Build the real service with C{tap.makeService} and start it on C{reactor}.

    It listens for TCP on 127.0.0.1, port 0, with UDP off and no history
    (plus any C{extra_options}, such as C{"--max-line", "64"}; a C{--history}
    among them replaces C{--history none}).

    @return: C{(service, port)}; stop the service (its Deferred) to clean up.
    """
    from chatservice import tap

    options = tap.Options()
    if "--history" not in extra_options:
        extra_options = (*extra_options, "--history", "none")
    options.parseOptions(
        ["--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off", *extra_options]
    )
    recorder = ListenRecorder(reactor)
    service = tap.makeService(options, reactor=recorder)
    service.startService()
    [port] = recorder.tcp_ports
    return service, port.getHost().port


class Tmux:
    """
    A tmux server of a test's own (its own socket name and folder, no user config) with
    one detached session, where a real terminal program runs as a person would use it.

    @param folder: where tmux keeps its socket (the caller removes it).
    """

    def __init__(self, reactor, folder: str, session: str = "chat") -> None:
        import shutil
        import uuid

        self._reactor = reactor
        self._program = shutil.which("tmux")
        self._env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        self._env["TMUX_TMPDIR"] = folder
        self._socket = f"chatroom-{uuid.uuid4().hex[:12]}"
        self.session = session

    def run(self, *args: str) -> defer.Deferred:
        """Run one tmux command on our server; fire with its stdout (text)."""
        from twisted.internet import utils

        d = utils.getProcessOutputAndValue(
            self._program, ["-L", self._socket, "-f", "/dev/null", *args],
            env=self._env, reactor=self._reactor)

        def check(result):
            out, err, code = result
            if code != 0:
                raise AssertionError(f"tmux {args!r} exited {code}: {err!r}")
            return out.decode("utf-8", "replace")

        return d.addCallback(check)

    def start(self, command: str, width: int = 200, height: int = 50) -> defer.Deferred:
        """Run C{command} in a detached pane that stays readable after it exits."""
        return self.run(
            "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
            command, ";", "set-option", "-t", self.session, "remain-on-exit", "on")

    def kill(self) -> defer.Deferred:
        """Stop our tmux server (and what runs in it), whatever state it is in."""
        from twisted.internet import utils

        return utils.getProcessOutputAndValue(
            self._program, ["-L", self._socket, "kill-server"], env=self._env,
            reactor=self._reactor)

    def pane(self) -> defer.Deferred:
        """The pane's text as it is now (wrapped lines joined)."""
        return self.run("capture-pane", "-p", "-J", "-t", self.session)

    def type_line(self, text: str) -> defer.Deferred:
        """Type C{text}, then Enter."""
        d = self.run("send-keys", "-t", self.session, "-l", text)
        return d.addCallback(lambda _: self.run("send-keys", "-t", self.session, "Enter"))

    def press(self, key: str) -> defer.Deferred:
        """Press one key, in tmux's naming (C{C-c})."""
        return self.run("send-keys", "-t", self.session, key)
