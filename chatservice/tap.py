# -*- test-case-name: tests.test_tap -*-
"""C{twistd chatroom}: its options and the service they build."""

import os
import socket
import sys

from twisted import copyright
from twisted.python import usage

from chatservice import __version__, logs
from chatservice.core.flood import FloodPolicy
from chatservice.core.limits import Admission, Limits
from chatservice.certs import reloadable_endpoint
from chatservice.metrics import metrics_resource, metrics_site
from chatservice.listen import (
    DatagramListener,
    StreamListener,
    datagram_address,
    irc_description,
    stream_description,
    stream_kind,
    web_description,
)
from chatservice.backends import history as history_store
from chatservice.core.hub import Hub
from chatservice.core.ids import IdGenerator
from chatservice.core.stats import Stats
from chatservice.core.names import is_room_name
from chatservice.core.nicks import NickRegistry
from chatservice.service import ChatService
from chatservice.frontends.backpressure import InputGate
from chatservice.frontends.irc import IRCChatFactory
from chatservice.frontends.web import WebChatFactory, make_site
from chatservice.frontends.line import LineChatFactory
from chatservice.frontends.udp import DatagramChat

_DEFAULTS = Limits()


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a number of at least 0")
    return number


class Options(usage.Options):
    """Command-line options of C{twistd chatroom}."""

    synopsis = ("[--tcp PORT|ENDPOINT] [--udp PORT|udp:PORT[:interface=ADDR]] "
                "[--irc PORT|ENDPOINT] [--web PORT|ENDPOINT] [limits]")
    longdesc = (
        "Chat rooms for telnet, nc, nc -u and chatroom-client, with one set of "
        "nicknames across every transport and a history kept in SQLite. Each limit "
        "is per user unless it says "
        "otherwise; 0 turns off --flood-rate, --max-per-ip, --max-clients and "
        "--login-timeout."
    )

    optFlags = [
        ["trust-proxy", None,
         "Take a WebSocket client's address from the X-Forwarded-For header (set it only "
         "behind a reverse proxy that sets that header)."],
    ]

    optParameters = [
        ["tcp", None, "12345",
         "TCP line chat: a port, or a Twisted endpoint such as "
         "tcp:12345:interface=127.0.0.1 (or 'off').", stream_description],
        ["udp", None, "12346",
         "UDP chat: a port, or udp:PORT[:interface=ADDR] (or 'off').",
         datagram_address],
        ["irc", None, "6667",
         "IRC: a port, or a Twisted endpoint such as ssl:6697:privateKey=key.pem:"
         "certKey=cert.pem (or 'off').", irc_description],
        ["web", None, "8080",
         "The web page and its WebSocket (at /ws): a port, or a Twisted endpoint such as "
         "ssl:8443:privateKey=key.pem:certKey=cert.pem for HTTPS and WSS (or 'off').",
         web_description],
        ["web-origins", None, "",
         "Comma-separated page origins (scheme://host[:port]) allowed to open a WebSocket, "
         "or '*' for any; empty: the page's own origin only."],
        ["metrics", None, "web",
         "Prometheus metrics: 'web' serves them at /metrics on the --web listener; an "
         "endpoint such as tcp:9100:interface=127.0.0.1 gives them a listener of their own; "
         "'off' serves none."],
        ["server-name", None, None,
         "The name the server gives itself on IRC (default: this machine's host name)."],
        ["motd", None, None,
         "A text file whose lines IRC clients are shown on connecting (the message of "
         "the day); without it they are told there is none."],
        ["max-line", None, _DEFAULTS.max_line,
         "Longest TCP line in bytes; a longer one is refused with '! line too long'.",
         _non_negative_int],
        ["max-backlog", None, _DEFAULTS.max_backlog,
         "Bytes of unsent output a TCP user may fall behind before being "
         "dropped as too slow to read.", _non_negative_int],
        ["flood-rate", None, _DEFAULTS.flood.rate,
         "Lines per second a user may send, sustained (0: no flood control).",
         _non_negative_float],
        ["flood-burst", None, _DEFAULTS.flood.burst,
         "Lines a user may send at once above --flood-rate.", _non_negative_int],
        ["flood-queue", None, _DEFAULTS.flood.queue,
         "Lines a UDP user may have waiting when over --flood-rate; further lines "
         "are refused (TCP users are slowed by not reading their socket instead).",
         _non_negative_int],
        ["max-clients", None, _DEFAULTS.max_clients,
         "Users connected at once over all transports (0: no limit).", _non_negative_int],
        ["max-per-ip", None, _DEFAULTS.max_per_ip,
         "Users connected at once from one address (0: no limit).", _non_negative_int],
        ["login-timeout", None, _DEFAULTS.login_timeout,
         "Seconds a new user has to choose a nickname (0: no limit).", _non_negative_float],
        ["udp-timeout", None, _DEFAULTS.udp_timeout,
         "Seconds of silence after which a UDP user expires.", _non_negative_float],
        ["shutdown-grace", None, _DEFAULTS.shutdown_grace,
         "Seconds to wait on stop for goodbyes to reach every user.", _non_negative_float],
        ["default-room", None, "#lobby",
         "The room every line-protocol user lands in on joining; it always exists."],
        ["max-rooms", None, _DEFAULTS.max_rooms,
         "Rooms the service holds at once, the default room included.", _non_negative_int],
        ["max-rooms-per-user", None, _DEFAULTS.max_rooms_per_user,
         "Rooms one user may be in at once.", _non_negative_int],
        ["max-topic", None, _DEFAULTS.max_topic,
         "Characters in a room topic.", _non_negative_int],
        ["history", None, "chatroom.sqlite3",
         "The SQLite file that keeps room history across restarts (created if "
         "missing), or 'none' to keep no history."],
        ["replay", None, 20,
         "Lines of a room's history shown on joining it (0: none).", _non_negative_int],
        ["history-days", None, 30,
         "Days of history kept; older lines are pruned hourly (0: keep everything).",
         _non_negative_int],
        ["log-level", None, logs.DEFAULT_LEVEL,
         "Least severe events twistd logs: " + ", ".join(logs.LEVELS) + " (debug adds "
         "wire detail such as UDP retransmissions).", logs.log_level],
    ]

    def opt_version(self) -> None:
        """Display chatroom's version (and Twisted's) and exit."""
        sys.stdout.write(f"chatroom {__version__} (Twisted {copyright.version})\n")
        sys.exit(0)

    @staticmethod
    def _check_endpoint(option: str, description: str) -> None:
        """
        Parse C{--tcp}'s (or C{--irc}'s) endpoint now, so an unknown type, a bad
        parameter or a missing key file is a usage error, not a traceback when listening.
        """
        try:
            reloadable_endpoint(None, description)
        except Exception as e:  # the parsers raise ValueError, KeyError, OSError, SSL errors...
            raise usage.UsageError(f"--{option} {description}: {e}")

    def postOptions(self) -> None:
        # usage.Options does not pass defaults through their coerce function.
        for name, parse in (
            ("tcp", stream_description), ("udp", datagram_address), ("irc", irc_description),
            ("web", web_description),
            ("log-level", logs.log_level)
        ):
            if isinstance(self[name], str):
                try:
                    self[name] = parse(self[name])
                except ValueError as e:
                    raise usage.UsageError(str(e))
        if all(self[name] is None for name in ("tcp", "udp", "irc", "web")):
            raise usage.UsageError(
                "--tcp, --udp, --irc and --web are all off: nobody could connect")
        self["web-origins"] = tuple(
            origin.strip() for origin in self["web-origins"].split(",") if origin.strip())
        if self["metrics"] in ("off", "web"):
            self["metrics"] = None if self["metrics"] == "off" else "web"
        else:
            try:
                self["metrics"] = stream_description(self["metrics"], "--metrics")
            except ValueError as e:
                raise usage.UsageError(str(e))
            self._check_endpoint("metrics", self["metrics"])
        for name in ("tcp", "irc", "web"):
            if self[name] is not None:
                self._check_endpoint(name, self[name])
        if not self["server-name"]:
            self["server-name"] = socket.gethostname() or "chatroom"
        if any(c in self["server-name"] for c in " \r\n\0:!@"):
            raise usage.UsageError("--server-name must be one word without :!@")
        self["motd-lines"] = ()
        if self["motd"]:
            try:
                with open(self["motd"], encoding="utf-8", errors="replace") as f:
                    self["motd-lines"] = tuple(
                        line.rstrip("\r\n")[:400] for line in f.read(65536).splitlines()
                    )
            except OSError as e:
                raise usage.UsageError(f"--motd {self['motd']}: {e.strerror}")
        for name in ("max-line", "max-backlog"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1 (it bounds memory)")
        if self["udp-timeout"] <= 0:
            raise usage.UsageError("--udp-timeout must be more than 0")
        if self["flood-rate"] > 0 and self["flood-burst"] < 1:
            raise usage.UsageError("--flood-burst must be at least 1 with flood control on")
        if not is_room_name(self["default-room"]):
            raise usage.UsageError(
                f"--default-room {self['default-room']}: a room name is # and 1 to 50 "
                "letters, digits or -_."
            )
        for name in ("max-rooms", "max-rooms-per-user", "max-topic"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["history"] == "":
            raise usage.UsageError("--history needs a file name, or 'none'")
        if self["history"] == "none":
            self["history"] = None
        self["limits"] = Limits(
            max_line=self["max-line"],
            max_backlog=self["max-backlog"],
            flood=FloodPolicy(
                rate=self["flood-rate"], burst=self["flood-burst"], queue=self["flood-queue"]
            ),
            max_clients=self["max-clients"],
            max_per_ip=self["max-per-ip"],
            login_timeout=self["login-timeout"],
            udp_timeout=self["udp-timeout"],
            shutdown_grace=self["shutdown-grace"],
            max_rooms=self["max-rooms"],
            max_rooms_per_user=self["max-rooms-per-user"],
            max_topic=self["max-topic"],
        )


def makeService(options, reactor=None) -> ChatService:
    """
    Build the chat service from parsed C{options}.

    @param reactor: the reactor to listen and keep time with; the global one
        if None (the only place besides the client that falls back to it),
        and then the service owns the process: it takes SIGTERM, exits 1 if it
        cannot listen (in twistd's daemon mode it raises, so twistd's waiting
        parent hears of it), and under twistd logs at C{--log-level}.
    """
    owns_process = reactor is None
    if reactor is None:
        from twisted.internet import reactor
    limits: Limits = options["limits"]
    log_observer = None
    daemon = False
    pidfile = ""
    if owns_process and logs.is_twistd(options.parent):
        if not options.parent["logger"]:  # twistd --logger=FACTORY wins, as twistd documents
            log_observer = logs.twistd_observer(options.parent, options["log-level"], reactor)
        # twistd sets "nodaemon" from -n (and --debug) before it builds the service.
        daemon = not options.parent["nodaemon"]
        pidfile = options.parent["pidfile"] or ""
    stats = Stats()
    ids = IdGenerator(reactor)
    store = None
    if options["history"] is not None:
        # Resolved now: twistd's daemon mode changes to --rundir after this, and the
        # file checked here must be the one the store opens later.
        path = os.path.abspath(options["history"])
        try:
            ids.advance_past(history_store.prepare(path))
        except history_store.HistoryFileError as error:
            if not owns_process:
                raise
            # twistd has not started logging yet: this line is all the operator gets.
            sys.stderr.write(f"chatroom: {error}\n")
            raise SystemExit(1) from None
        store = history_store.SQLiteHistory(
            path, reactor, retention_days=options["history-days"], stats=stats
        )
    registry = NickRegistry()
    hub = Hub(reactor, limits, options["default-room"], history=store,
              replay=options["replay"], ids=ids, stats=stats)
    admission = Admission(limits.max_clients, limits.max_per_ip)
    # One for the whole service, shared by every stream front-end (IRC and WebSocket next).
    gate = InputGate(reactor)
    service = ChatService(
        hub, registry, admission, reactor, grace=limits.shutdown_grace,
        owns_process=owns_process, exit_if_cannot_listen=owns_process and not daemon,
        pidfile=pidfile, log_observer=log_observer,
    )
    if store is not None:
        history_store.HistoryService(store, reactor).setServiceParent(service)
    if options["tcp"] is not None:
        factory = LineChatFactory(hub, registry, reactor, admission, limits, gate=gate)
        service.add_stream_listener(StreamListener(reactor, options["tcp"], factory))
    if options["irc"] is not None:
        irc = IRCChatFactory(hub, registry, reactor, admission, limits, gate=gate,
                             server_name=options["server-name"], motd=options["motd-lines"])
        service.add_stream_listener(StreamListener(reactor, options["irc"], irc, what="IRC"))
    if options["web"] is not None:
        web = WebChatFactory(hub, registry, reactor, admission, limits,
                             origins=options["web-origins"], trust_proxy=options["trust-proxy"],
                             secure=stream_kind(options["web"]) == "TLS")
        more = {b"metrics": metrics_resource(hub)} if options["metrics"] == "web" else None
        service.add_stream_listener(
            StreamListener(reactor, options["web"], make_site(web, more=more), what="web"))
    if options["metrics"] not in (None, "web"):
        service.add_stream_listener(
            StreamListener(reactor, options["metrics"], metrics_site(hub), what="metrics"))
    if options["udp"] is not None:
        protocol = DatagramChat(hub, registry, reactor, admission, limits)
        service.add_datagram_listener(
            DatagramListener(
                reactor, options["udp"], protocol, max_packet_size=protocol.max_datagram_read
            )
        )
    return service
