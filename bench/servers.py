"""The servers under test: how to configure, start, find and stop each one.

Every server runs as a child of the harness, pinned to CPU 0 with ``taskset``, listening on
127.0.0.1 only, with a generated config in a temporary directory and a raised open-file limit.
Readiness is "the TCP port accepts a connection", polled with a bounded timeout.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
GENERATOR_CPU = "1"
NOFILE = 65536  # per process; 10,000 connections plus headroom
IRC_CHANNEL = "#bench"
IRC_OPER = ("bench", "benchpass")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Ask the kernel for a free port on 127.0.0.1 (closed again at once; small race accepted)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process's RLIMIT_NOFILE as far as allowed; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (limit, hard):
        try:
            if os.geteuid() == 0 and want > hard:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            else:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:
    """preexec_fn for servers: raise the open-file limit in the child before exec."""
    raise_nofile(NOFILE)


def apt_install(packages: list[str], log) -> None:
    """Install Debian packages with apt-get (only called when a binary is missing)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("apt-get install -y %s" % " ".join(packages))
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq"] + packages, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/PID/status (0 if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds used so far by a process (utime+stime from /proc/PID/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Server:
    """One server under test. Subclasses write configs and build the command line.

    @ivar name: short name used in reports and ``--only``.
    @ivar proto: ``"chat"`` (chatroom's line protocol) or ``"irc"``.
    @ivar udp_kind: ``"chatroom"`` (reliable frames), ``"seed"`` (plain lines x3) or None.
    @ivar notes: limits that could not be raised, shown in the report.
    """

    name: str = ""
    proto: str = "chat"
    udp_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    tcp_port: int = 0
    udp_port: int = 0
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    login_extra: dict = field(default_factory=dict)

    def available(self) -> str | None:
        """Return None if the server can run here, else the reason it cannot."""
        return None

    def command(self) -> list[str]:
        """The command line (before taskset) to start the server."""
        raise NotImplementedError

    def write_config(self) -> None:
        """Write whatever config file the server needs into ``self.workdir``."""

    def start(self, workdir: Path, timeout: float = 30.0) -> None:
        """Start the server pinned to CPU 0 and wait until its TCP port accepts connections."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tcp_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM) if self.udp_kind else 0
        self.write_config()
        out = open(workdir / ("%s.out" % self.name), "wb")
        try:
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVER_CPU] + self.command(), cwd=str(REPO),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_child_setup, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (
                    self.name, self.proc.returncode, workdir / ("%s.out" % self.name)))
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not accept connections within %.0fs" % (self.name, timeout))

    @property
    def pid(self) -> int:
        """Process id of the running server (taskset execs, so it is the Popen pid)."""
        return self.proc.pid if self.proc else 0

    def stop(self) -> None:
        """Terminate the server's process group; kill it if it lingers. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class ChatroomServer(Server):
    """
    chatroom itself: ``python -m twisted --reactor=epoll chatroom`` with TCP and UDP.

    With ``history`` (the shipped default) every line is also written to a SQLite history in the
    server's work folder; ``chatroom-nohistory`` runs ``--history none``, for the history ratio.
    """

    def __init__(self, history: bool = True) -> None:
        super().__init__(name="chatroom" if history else "chatroom-nohistory", proto="chat",
                         udp_kind="chatroom")
        self.login_extra = {"concurrency": 500, "connect_rate": 1000}
        self.history = history
        self.notes = ["flood limit, per-IP limit off (--flood-rate 0 --max-per-ip 0), --max-clients 20000, "
                      "listen backlog 1024 (as for a bare --tcp port); --max-backlog left at its default 1 MiB; "
                      + ("history on (the default: SQLite file in the work folder)" if history
                         else "--history none")]

    def available(self) -> str | None:
        probe = subprocess.run(
            [sys.executable, "-c", "import chatservice.tap"], cwd=str(REPO),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        if probe.returncode:
            last = (probe.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return "chatservice.tap does not import (%s)" % last
        return None

    def listeners(self) -> list[str]:
        """The listener options: the load comes in on ``tcp_port``, every other listener off."""
        return ["--tcp", "tcp:%d:interface=127.0.0.1:backlog=1024" % self.tcp_port,
                "--udp", "udp:%d:interface=127.0.0.1" % self.udp_port,
                "--irc", "off", "--web", "off"]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "twisted", "--reactor=epoll",
                "--log-file=%s" % (self.workdir / "chatroom.log"),
                "chatroom", *self.listeners(),
                "--flood-rate", "0", "--max-per-ip", "0", "--max-clients", "20000",
                "--history", str(self.workdir / "history.sqlite3") if self.history else "none"]


class ChatroomIrcServer(ChatroomServer):
    """chatroom with IRC clients: the same process, its IRC listener only (``--irc``)."""

    def __init__(self) -> None:
        super().__init__(history=True)
        self.name, self.proto, self.udp_kind = "chatroom-irc", "irc", None
        self.notes = ["as chatroom, with the IRC listener only (--tcp off --udp off, "
                      "--irc on the port under test, --server-name bench.local); clients "
                      "register without CAP (NICK, USER), JOIN, then PRIVMSG"]

    def listeners(self) -> list[str]:
        return ["--tcp", "off", "--udp", "off", "--web", "off",
                "--irc", "tcp:%d:interface=127.0.0.1:backlog=1024" % self.tcp_port,
                "--server-name", "bench.local"]


class ChatroomWebServer(ChatroomServer):
    """chatroom with WebSocket users: the same process, its web listener only (``--web``)."""

    def __init__(self) -> None:
        super().__init__(history=True)
        self.name, self.proto, self.udp_kind = "chatroom-web", "ws", None
        self.notes = ["as chatroom, with the web listener only (--tcp off --udp off --irc off, "
                      "--web on the port under test); users open a WebSocket at /ws, say hello "
                      "and send each line as one masked text frame of JSON, as the page does; "
                      "each event received is one text frame"]

    def listeners(self) -> list[str]:
        return ["--tcp", "off", "--udp", "off", "--irc", "off",
                "--web", "tcp:%d:interface=127.0.0.1:backlog=1024" % self.tcp_port]


class SeedServer(Server):
    """The seed-style threaded baseline from ``bench/baselines/seed_server.py``."""

    def __init__(self) -> None:
        super().__init__(name="seed", proto="chat", udp_kind="seed")
        self.login_extra = {"concurrency": 500, "connect_rate": 1000}
        self.notes = ["no limits at all (one thread per client, global send lock); rooms added "
                      "for the many-rooms shape (/join, /part, a dict of sockets per room)"]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.baselines.seed_server",
                "--tcp", str(self.tcp_port), "--udp", str(self.udp_port)]


NGIRCD_CONF = """\
[Global]
    Name = bench.local
    Info = chatroom benchmark
    Listen = 127.0.0.1
    Ports = {port}
    MotdPhrase = bench
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 31
    MaxListSize = 100
    MaxPenaltyTime = 0
    PingTimeout = 3600
    PongTimeout = 3600
[Options]
    DNS = no
    Ident = no
    PAM = no
    OperCanUseMode = yes
    RequireAuthPing = no
    MorePrivacy = no
    ScrubCTCP = no
[Operator]
    Name = {oper}
    Password = {password}
"""


class NgircdServer(Server):
    """ngIRCd from the Debian package, foreground (``-n``), generated config."""

    def __init__(self) -> None:
        super().__init__(name="ngircd", proto="irc", udp_kind=None)
        # ngircd accepts one connection per pass of its main loop and listens with a backlog
        # of 10 (compiled in): more than a few connections in flight overflow it and the
        # kernel drops SYNs (clients then back off 1, 3, 7 s). So it logs in 8 at a time.
        self.login_extra = {"oper": list(IRC_OPER), "oper_mode": "+F", "concurrency": 8,
                            "connect_rate": 2000}
        self.notes = [
            "MaxConnections=0, MaxConnectionsIP=0, MaxJoins=0 (unlimited), MaxPenaltyTime=0 "
            "(penalties off), PingTimeout/PongTimeout 3600 s; every user OPERs and sets user "
            "mode +F (no throttling, 10 instead of 3 commands per client per main-loop pass)",
            "compiled in, cannot be raised: a client's unprocessed input may not exceed 2 KiB "
            "(READBUFFER_LEN; more closes it with 'Receive buffer space exhausted'), at most 10 "
            "commands per client per pass of the main loop (MAX_COMMANDS_SERVICE), a client's "
            "output buffer may not exceed 32 KiB (WRITEBUFFER_MAX_LEN; more closes it), listen "
            "backlog 10 (logins are paced to 8 in flight)",
        ]

    def available(self) -> str | None:
        return None if shutil.which("ngircd") else "ngircd binary missing"

    def write_config(self) -> None:
        (self.workdir / "ngircd.conf").write_text(NGIRCD_CONF.format(
            port=self.tcp_port, dir=self.workdir, oper=IRC_OPER[0], password=IRC_OPER[1]))

    def command(self) -> list[str]:
        return [shutil.which("ngircd") or "ngircd", "-n", "-f", str(self.workdir / "ngircd.conf")]


INSPIRCD_CONF = """\
<server name="bench.local" description="chatroom benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<power diepass="x-{password}" restartpass="x-{password}">
<connect name="main" allow="*" maxchans="20" timeout="60" pingfreq="3600"
         hardsendq="1073741824" softsendq="1048576" recvq="1048576"
         threshold="1000000" commandrate="1000000000" fakelag="no"
         localmax="100000" globalmax="100000" limit="100000"
         resolvehostnames="no" useident="no">
<class name="Flood" commands="*" privs="users/flood/no-throttle users/flood/increased-buffers users/flood/no-fakelag" usermodes="*" chanmodes="*">
<type name="Bench" classes="Flood">
<oper name="{oper}" password="{password}" host="*@*" type="Bench">
<files motd="{dir}/motd.txt">
<pid file="{dir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{dir}/inspircd.log">
<channels users="100" opers="100">
<performance netbuffersize="65536" somaxconn="4096" softlimit="60000" clonesonconnect="no" timeskipwarn="0" quietbursts="yes">
<options prefixquit="Quit: " syntaxhints="no" announcets="yes" hostintopic="yes" pingwarning="0" splitwhois="no" exemptchanops="">
<security hideserver="" userstats="Pu" customversion="" flatlinks="no" hidesplits="no" hideulines="no" hidebans="no" maxtargets="20" runasuser="" runasgroup="">
<limits maxnick="30" maxchan="64" maxmodes="20" maxident="11" maxquit="255" maxtopic="307" maxkick="255" maxreal="128" maxgecos="128" maxaway="200">
<dns timeout="1">
"""


class InspircdServer(Server):
    """InspIRCd 3 from the Debian package, ``--nofork --runasroot``, generated config."""

    def __init__(self) -> None:
        super().__init__(name="inspircd", proto="irc", udp_kind=None)
        self.login_extra = {"oper": list(IRC_OPER), "oper_mode": None, "concurrency": 500,
                            "connect_rate": 1000}
        self.notes = [
            "connect class: threshold 1000000, commandrate 1000000000, fakelag off, hardsendq 1 GiB, "
            "recvq 1 MiB, localmax/globalmax/limit 100000; every user also OPERs up with "
            "users/flood/no-throttle",
            "softsendq 1 MiB: above it InspIRCd delays reading that user's commands (by design)",
        ]

    def available(self) -> str | None:
        return None if shutil.which("inspircd") else "inspircd binary missing"

    def write_config(self) -> None:
        (self.workdir / "motd.txt").write_text("bench\n")
        (self.workdir / "inspircd.conf").write_text(INSPIRCD_CONF.format(
            port=self.tcp_port, dir=self.workdir, oper=IRC_OPER[0], password=IRC_OPER[1]))

    def command(self) -> list[str]:
        return [shutil.which("inspircd") or "inspircd", "--nofork", "--runasroot", "--nopid",
                "--config=%s" % (self.workdir / "inspircd.conf")]


ALL_SERVERS = ("chatroom", "chatroom-irc", "chatroom-web", "seed", "ngircd", "inspircd")
APT_PACKAGES = {"ngircd": "ngircd", "inspircd": "inspircd"}


def make_server(name: str) -> Server:
    """Build the adapter for one server by its report name."""
    if name == "chatroom-nohistory":
        return ChatroomServer(history=False)
    return {"chatroom": ChatroomServer, "chatroom-irc": ChatroomIrcServer,
            "chatroom-web": ChatroomWebServer, "seed": SeedServer,
            "ngircd": NgircdServer, "inspircd": InspircdServer}[name]()
