"""
Tests for L{chatservice.tap} and the twistd dropin: option parsing, the
service C{makeService} wires (on a fake reactor), and plugin discovery.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace

from twisted import copyright
from twisted.application.service import IServiceMaker
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import LogLevel, capturedLogs
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice import __version__, tap
from chatservice.backends import history as history_store
from chatservice.core.errors import Unavailable
from chatservice.core.events import Joined, Left, Said
from chatservice.core.flood import FloodPolicy
from chatservice.core.ids import EPOCH, id_time
from chatservice.core.interfaces import IHistoryStore, IParticipant
from chatservice.core.limits import Limits
from chatservice.core.session import Session
from chatservice.listen import DatagramAddress
from chatservice.service import ChatService
from chatservice.frontends.line import LineChatFactory
from chatservice.frontends.udp import DatagramChat
from tests.support import PROJECT_ROOT


class _FakeUDPPort:
    """What L{UDPMemoryReactor.listenUDP} returns."""

    def __init__(self, port, interface):
        self._address = IPv4Address("UDP", interface or "0.0.0.0", port)
        self.stopped = False

    def getHost(self):
        return self._address

    def stopListening(self):
        self.stopped = True
        return defer.succeed(None)


class UDPMemoryReactor(MemoryReactorClock):
    """
    A MemoryReactorClock that also records C{listenUDP} calls (MemoryReactor
    has none), as Synapse's C{tests/server.py} adds one.
    """

    def __init__(self):
        super().__init__()
        self.udpServers = []
        self.udpPorts = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        listening = _FakeUDPPort(port, interface)
        self.udpPorts.append(listening)
        return listening


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def no_history(*argv):
    """C{argv} with C{--history none} (a test must never create the default file in its cwd)
    and, unless C{argv} names them, C{--irc off} and C{--web off} (these tests are about the
    other listeners)."""
    return ((*argv, "--history", "none") + (() if "--irc" in argv else ("--irc", "off"))
            + (() if "--web" in argv else ("--web", "off")))


def temp_folder(case):
    """A temporary folder removed after C{case} (not trial's mktemp: under pytest that
    would be in the project folder)."""
    folder = tempfile.mkdtemp(prefix="chatroom-tap-")
    case.addCleanup(shutil.rmtree, folder, True)
    return folder


class OptionsTests(SynchronousTestCase):
    """Every option of C{twistd chatroom}, its default, and bad values."""

    def test_defaults(self):
        options = parse()
        self.assertEqual(options["tcp"], "tcp:12345:backlog=1024")
        self.assertEqual(options["udp"], DatagramAddress(12346, ""))
        self.assertEqual(options["max-line"], 4096)
        self.assertEqual(options["max-backlog"], 1048576)
        self.assertEqual(options["flood-rate"], 10)
        self.assertEqual(options["flood-burst"], 20)
        self.assertEqual(options["flood-queue"], FloodPolicy().queue)
        self.assertEqual(options["log-level"], LogLevel.info)
        self.assertEqual(options["max-clients"], 10000)
        self.assertEqual(options["max-per-ip"], 100)
        self.assertEqual(options["login-timeout"], 60)
        self.assertEqual(options["udp-timeout"], 60)
        self.assertEqual(options["shutdown-grace"], 2)
        self.assertEqual(options["default-room"], "#lobby")
        self.assertEqual(options["max-rooms"], 1000)
        self.assertEqual(options["max-rooms-per-user"], 20)
        self.assertEqual(options["max-topic"], 300)
        # In the working directory; tests pass --history none or a temporary path.
        self.assertEqual(options["history"], "chatroom.sqlite3")
        self.assertEqual(options["replay"], 20)
        self.assertEqual(options["history-days"], 30)

    def test_default_limits(self):
        self.assertEqual(
            parse()["limits"],
            Limits(
                max_line=4096,
                max_backlog=1048576,
                flood=FloodPolicy(rate=10.0, burst=20, queue=FloodPolicy().queue),
                max_clients=10000,
                max_per_ip=100,
                login_timeout=60.0,
                udp_timeout=60.0,
                shutdown_grace=2.0,
                max_rooms=1000,
                max_rooms_per_user=20,
            ),
        )

    def test_tcp_port(self):
        self.assertEqual(parse("--tcp", "5555")["tcp"], "tcp:5555:backlog=1024")

    def test_tcp_endpoint(self):
        self.assertEqual(
            parse("--tcp", "tcp:5555:interface=127.0.0.1")["tcp"],
            "tcp:5555:interface=127.0.0.1",
        )

    def test_tcp_off(self):
        self.assertIsNone(parse("--tcp", "off")["tcp"])

    def test_udp_port(self):
        self.assertEqual(parse("--udp", "5556")["udp"], DatagramAddress(5556, ""))

    def test_udp_interface(self):
        self.assertEqual(
            parse("--udp", "udp:port=5556:interface=::1")["udp"], DatagramAddress(5556, "::1")
        )

    def test_udp_off(self):
        self.assertIsNone(parse("--udp", "off")["udp"])

    def test_all_off(self):
        with self.assertRaises(usage.UsageError):
            parse("--tcp", "off", "--udp", "off", "--irc", "off", "--web", "off")

    def test_irc_alone_is_enough(self):
        self.assertEqual(parse("--tcp", "off", "--udp", "off")["irc"], "tcp:6667:backlog=1024")

    def test_irc_options(self):
        options = parse("--irc", "tcp:6697:interface=127.0.0.1", "--server-name", "chat.example")
        self.assertEqual((options["irc"], options["server-name"]),
                         ("tcp:6697:interface=127.0.0.1", "chat.example"))
        self.assertRaises(usage.UsageError, parse, "--server-name", "bad name")
        self.assertRaises(usage.UsageError, parse, "--irc", "70000")
        self.assertRaises(usage.UsageError, parse, "--motd", "/nonexistent/motd.txt")

    def test_web_options(self):
        self.assertEqual(parse("--tcp", "off", "--udp", "off", "--web", "9000")["web"],
                         "tcp:9000:backlog=1024")
        self.assertIsNone(parse("--web", "off")["web"])
        options = parse("--web", "tcp:8081:interface=127.0.0.1",
                        "--web-origins", "https://chat.example, http://localhost:8081",
                        "--trust-proxy")
        self.assertEqual((options["web"], options["web-origins"], options["trust-proxy"]),
                         ("tcp:8081:interface=127.0.0.1",
                          ("https://chat.example", "http://localhost:8081"), True))
        self.assertEqual(parse()["web-origins"], ())
        self.assertRaises(usage.UsageError, parse, "--web", "70000")
        self.assertRaises(usage.UsageError, parse, "--web", "ssl:8443:privateKey=/nonexistent")

    def test_each_limit(self):
        cases = [
            ("--max-line", "100", "max_line", 100),
            ("--max-backlog", "5000", "max_backlog", 5000),
            ("--flood-rate", "2.5", "flood", FloodPolicy(rate=2.5, burst=20)),
            ("--flood-burst", "3", "flood", FloodPolicy(rate=10.0, burst=3)),
            ("--flood-queue", "7", "flood", FloodPolicy(rate=10.0, burst=20, queue=7)),
            ("--flood-queue", "0", "flood", FloodPolicy(rate=10.0, burst=20, queue=0)),
            ("--max-clients", "7", "max_clients", 7),
            ("--max-per-ip", "4", "max_per_ip", 4),
            ("--login-timeout", "1.5", "login_timeout", 1.5),
            ("--udp-timeout", "9", "udp_timeout", 9.0),
            ("--shutdown-grace", "0.25", "shutdown_grace", 0.25),
            ("--max-rooms", "3", "max_rooms", 3),
            ("--max-rooms-per-user", "2", "max_rooms_per_user", 2),
            ("--max-rooms", "1", "max_rooms", 1),
            ("--max-rooms-per-user", "1", "max_rooms_per_user", 1),
            ("--max-topic", "80", "max_topic", 80),
        ]
        for option, value, field, expected in cases:
            limits = parse(option, value)["limits"]
            self.assertEqual(limits, replace(Limits(), **{field: expected}), option)

    def test_equals_form(self):
        self.assertEqual(parse("--max-line=123")["limits"].max_line, 123)

    def test_zero_turns_limits_off(self):
        limits = parse(
            "--flood-rate", "0", "--flood-burst", "0", "--max-clients", "0",
            "--max-per-ip", "0", "--login-timeout", "0", "--shutdown-grace", "0",
        )["limits"]
        self.assertFalse(limits.flood.enabled)
        self.assertEqual(limits.max_clients, 0)
        self.assertEqual(limits.max_per_ip, 0)
        self.assertEqual(limits.login_timeout, 0)
        self.assertEqual(limits.shutdown_grace, 0)

    def test_bad_values(self):
        bad = [
            ("--tcp", "99999"),
            ("--tcp", "abc"),
            ("--udp", "tcp:1"),
            ("--udp", "udp:1:bogus=2"),
            ("--udp", "70000"),
            ("--max-line", "-1"),
            ("--max-line", "many"),
            ("--max-line", "1.5"),
            ("--max-backlog", "-5"),
            ("--max-backlog", "0"),  # every buffer keeps a bound
            ("--max-line", "0"),
            ("--flood-rate", "-1"),
            ("--flood-rate", "nan"),
            ("--flood-rate", "inf"),
            ("--flood-rate", "fast"),
            ("--flood-burst", "-1"),
            ("--flood-burst", "0"),  # with flood control on
            ("--flood-queue", "-1"),
            ("--flood-queue", "many"),
            ("--log-level", "verbose"),
            ("--log-level", ""),
            ("--max-clients", "-1"),
            ("--max-per-ip", "x"),
            ("--login-timeout", "-1"),
            ("--udp-timeout", "0"),
            ("--udp-timeout", "-3"),
            ("--shutdown-grace", "-1"),
            ("--shutdown-grace", "inf"),
            ("--max-rooms", "0"),  # the default room is always there
            ("--max-rooms", "-1"),
            ("--max-rooms", "many"),
            ("--max-rooms-per-user", "0"),  # everyone is in the default room
            ("--max-topic", "0"),
            ("--max-topic", "-5"),
            ("--max-rooms-per-user", "-2"),
            ("--max-rooms-per-user", "1.5"),
            ("--history", ""),
            ("--replay", "-1"),
            ("--replay", "all"),
            ("--replay", "2.5"),
            ("--history-days", "-1"),
            ("--history-days", "forever"),
        ]
        for argv in bad:
            self.assertRaises(usage.UsageError, parse, *argv)

    def test_bad_tcp_endpoint_is_a_usage_error(self):
        """An unknown endpoint type, a bad parameter or a missing key file: a usage error."""
        for spec, says in [
            ("foo:1", "Unknown endpoint type: 'foo'"),
            ("tcp:0:bogus=1", "bogus"),
            ("ssl:0:privateKey=/nonexistent/key.pem:certKey=/nonexistent/cert.pem",
             "No such file or directory"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                tap.Options().parseOptions(["--tcp", spec])
            self.assertIn(f"--tcp {spec}: ", str(caught.exception))
            self.assertIn(says, str(caught.exception))

    def test_unknown_option(self):
        self.assertRaises(usage.UsageError, parse, "--no-such-option")

    def test_every_option_has_help(self):
        for name, _, _, help_text, *_ in tap.Options.optParameters:
            self.assertTrue(help_text.strip(), name)
        text = str(tap.Options())
        for name in (
            "tcp", "udp", "max-line", "max-backlog", "flood-rate", "flood-burst", "flood-queue",
            "max-clients", "max-per-ip", "login-timeout", "udp-timeout", "shutdown-grace",
            "default-room", "max-rooms", "max-rooms-per-user", "history", "replay",
            "history-days", "log-level", "version",
        ):
            self.assertIn(f"--{name}", text)

    def test_log_levels(self):
        for name, level in (
            ("debug", LogLevel.debug), ("info", LogLevel.info), ("warn", LogLevel.warn),
            ("error", LogLevel.error), ("critical", LogLevel.critical), ("DEBUG", LogLevel.debug),
        ):
            self.assertEqual(parse("--log-level", name)["log-level"], level, name)

    def test_flood_queue_help_says_what_happens_past_it(self):
        [help_text] = [h for n, _, _, h, *_ in tap.Options.optParameters if n == "flood-queue"]
        self.assertEqual(
            help_text,
            "Lines a UDP user may have waiting when over --flood-rate; further lines are "
            "refused (TCP users are slowed by not reading their socket instead).",
        )

    def test_version_is_chatrooms(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as raised:
            parse("--version")
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(out.getvalue(), f"chatroom {__version__} (Twisted {copyright.version})\n")


class RoomAndHistoryOptionsTests(SynchronousTestCase):
    """--default-room, --max-rooms, --max-rooms-per-user, --history, --replay, --history-days."""

    def test_default_room(self):
        for name in ("#dev", "#Dev-1_x.y", "#" + "a" * 50, "#1"):
            self.assertEqual(parse("--default-room", name)["default-room"], name)

    def test_default_room_must_be_a_room_name(self):
        for name in ("lobby", "#", "", "#" + "a" * 51, "#a b", "#caf\u00e9", "##", "#a,b",
                     " #lobby"):
            with self.assertRaises(usage.UsageError) as caught:
                parse("--default-room", name)
            self.assertIn("--default-room", str(caught.exception), name)
            self.assertIn("a room name is #", str(caught.exception), name)

    def test_max_rooms_at_least_1(self):
        for name in ("max-rooms", "max-rooms-per-user"):
            with self.assertRaises(usage.UsageError) as caught:
                parse(f"--{name}", "0")
            self.assertEqual(str(caught.exception), f"--{name} must be at least 1")

    def test_history_path(self):
        self.assertEqual(parse("--history", "/var/lib/chat/h.db")["history"], "/var/lib/chat/h.db")
        self.assertEqual(parse("--history=rel/h.db")["history"], "rel/h.db")

    def test_history_none_keeps_none(self):
        self.assertIsNone(parse("--history", "none")["history"])

    def test_empty_history_is_an_error(self):
        with self.assertRaises(usage.UsageError) as caught:
            parse("--history", "")
        self.assertIn("--history", str(caught.exception))
        self.assertIn("none", str(caught.exception))

    def test_replay(self):
        self.assertEqual(parse("--replay", "0")["replay"], 0)
        self.assertEqual(parse("--replay", "200")["replay"], 200)

    def test_history_days(self):
        self.assertEqual(parse("--history-days", "0")["history-days"], 0)
        self.assertEqual(parse("--history-days", "7")["history-days"], 7)


class MakeServiceTests(SynchronousTestCase):
    """makeService wires listeners onto the reactor it is given."""

    def make(self, *argv):
        reactor = UDPMemoryReactor()
        service = tap.makeService(parse(*no_history(*argv)), reactor=reactor)
        return reactor, service

    def test_tcp_and_udp_listen(self):
        reactor, service = self.make(
            "--tcp", "tcp:4567:interface=127.0.0.1", "--udp", "udp:4568:interface=127.0.0.1"
        )
        self.assertIsInstance(service, ChatService)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(reactor.udpServers, [])
        service.startService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4567, "127.0.0.1"))
        self.assertIsInstance(factory, LineChatFactory)
        [(udp_port, protocol, udp_interface, max_packet)] = reactor.udpServers
        self.assertEqual((udp_port, udp_interface), (4568, "127.0.0.1"))
        self.assertIsInstance(protocol, DatagramChat)
        self.assertEqual(max_packet, protocol.max_datagram_read)

    def test_defaults_listen_on_12345_and_12346(self):
        """And IRC on 6667, the web on 8080."""
        reactor = UDPMemoryReactor()
        service = tap.makeService(parse("--history", "none"), reactor=reactor)
        service.startService()
        self.assertEqual([(s[0], s[3]) for s in reactor.tcpServers],
                         [(12345, ""), (6667, ""), (8080, "")])
        self.assertEqual([(s[0], s[2]) for s in reactor.udpServers], [(12346, "")])

    def test_bare_port_listens_with_a_deep_backlog(self):
        """A burst of connections must not overflow the accept queue (Twisted's default is 50)."""
        reactor, service = self.make("--tcp", "7001")
        service.startService()
        self.assertEqual([(s[0], s[2]) for s in reactor.tcpServers], [(7001, 1024)])

    def test_bare_ports(self):
        reactor, service = self.make("--tcp", "7000", "--udp", "7001")
        service.startService()
        self.assertEqual([s[0] for s in reactor.tcpServers], [7000])
        self.assertEqual([s[0] for s in reactor.udpServers], [7001])

    def test_ipv6_udp_interface(self):
        reactor, service = self.make("--tcp", "7000", "--udp", "udp:port=7001:interface=::1")
        service.startService()
        self.assertEqual([(s[0], s[2]) for s in reactor.udpServers], [(7001, "::1")])

    def test_tcp_off(self):
        reactor, service = self.make("--tcp", "off", "--udp", "7001")
        service.startService()
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(len(reactor.udpServers), 1)

    def test_udp_off(self):
        reactor, service = self.make("--tcp", "7000", "--udp", "off")
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertEqual(reactor.udpServers, [])

    def test_one_room_registry_and_limits_for_all(self):
        reactor, service = self.make(
            "--tcp", "7000", "--udp", "7001", "--max-line", "99", "--max-clients", "5"
        )
        service.startService()
        factory = reactor.tcpServers[0][1]
        protocol = reactor.udpServers[0][1]
        self.assertIs(factory.hub, service.hub)
        self.assertIs(factory.registry, service.registry)
        self.assertIs(factory.admission, service.admission)
        self.assertIs(protocol.hub, service.hub)
        self.assertIs(protocol.registry, service.registry)
        self.assertEqual(factory.limits.max_line, 99)
        self.assertEqual(factory.limits.max_clients, 5)
        self.assertIs(factory.clock, reactor)

    def test_room_options_reach_the_hub_and_the_limits(self):
        reactor, service = self.make(
            "--tcp", "7000", "--udp", "7001", "--default-room", "#Main",
            "--max-rooms", "7", "--max-rooms-per-user", "3",
        )
        self.assertEqual(service.hub.default_room.name, "#Main")
        self.assertEqual(service.hub.rooms(), (("#Main", 0, ""),))
        service.startService()
        for limits in (reactor.tcpServers[0][1].limits, reactor.udpServers[0][1].limits):
            self.assertEqual((limits.max_rooms, limits.max_rooms_per_user), (7, 3))

    def test_history_none_keeps_no_history(self):
        reactor, service = self.make("--tcp", "7000", "--udp", "off")
        self.assertEqual(
            [child for child in service if isinstance(child, history_store.HistoryService)], []
        )
        self.assertEqual(service.hub.turn.sinks, [])
        # /history says so, and joining replays nothing.
        user = _HeldParticipant([])
        Session(user, service.hub, service.registry, reactor).start("alice")
        reactor.advance(0)
        self.assertRaises(
            Unavailable, service.hub.history, user, service.hub.default_room, 5
        )

    def test_given_reactor_leaves_signals_alone(self):
        """Only twistd's global reactor has its SIGTERM taken over."""
        before = signal.getsignal(signal.SIGTERM)
        reactor, service = self.make("--tcp", "7000", "--udp", "7001")
        service.startService()
        self.assertEqual(reactor.whenRunningHooks, [])
        self.assertEqual(signal.getsignal(signal.SIGTERM), before)

    def test_logs_where_each_listener_listens(self):
        reactor = UDPMemoryReactor()
        service = tap.makeService(
            parse(*no_history(
                "--tcp", "tcp:4567:interface=127.0.0.1", "--udp", "udp:4568:interface=127.0.0.1"
            )),
            reactor=reactor,
        )
        with capturedLogs() as events:
            service.startService()
        listening = [e for e in events if "listening on" in e["log_format"]]
        self.assertEqual(
            [(e["kind"], e["what"], e["address"], e["log_level"]) for e in listening],
            [
                # MemoryReactor's TCP port says 0.0.0.0 whatever it was asked.
                ("TCP", "line chat", "0.0.0.0:4567", LogLevel.info),
                ("UDP", "chat", "127.0.0.1:4568", LogLevel.info),
            ],
        )

    def test_cannot_listen_is_raised_with_one_critical_line(self):
        """With a reactor given (not twistd's), the error is raised, not turned into an exit."""
        taken = CannotListenError("127.0.0.1", 4567, OSError(98, "Address already in use"))
        service = tap.makeService(
            parse(*no_history("--tcp", "tcp:4567:interface=127.0.0.1", "--udp", "off")),
            reactor=RaisingMemoryReactor(listenException=taken),
        )
        with capturedLogs() as events:
            self.assertRaises(CannotListenError, service.privilegedStartService)
        [line] = [e for e in events if e["log_level"] is LogLevel.critical]
        self.assertEqual(
            (line["kind"], line["where"], line["reason"]),
            ("TCP", "port 4567 on 127.0.0.1", "address already in use"),
        )

    def test_stop_stops_listening(self):
        reactor, service = self.make("--tcp", "7000", "--udp", "7001")
        service.startService()
        d = service.stopService()
        self.successResultOf(d)
        self.assertFalse(service.running)
        self.assertTrue(reactor.udpPorts[0].stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])


class _JournalPort:
    """A listening port that notes when it stops listening."""

    def __init__(self, journal, kind, address):
        self._journal = journal
        self._kind = kind
        self._address = address

    def getHost(self):
        return self._address

    def stopListening(self):
        self._journal.append(f"{self._kind} stops listening")
        return defer.succeed(None)


class JournalReactor(MemoryReactorClock):
    """A MemoryReactorClock whose TCP and UDP ports note their stop in C{journal}."""

    def __init__(self, journal):
        super().__init__()
        self._journal = journal

    def listenTCP(self, port, factory, backlog=50, interface=""):
        super().listenTCP(port, factory, backlog, interface)
        return _JournalPort(self._journal, "TCP", IPv4Address("TCP", interface, port))

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return _JournalPort(self._journal, "UDP", IPv4Address("UDP", interface, port))


@implementer(IParticipant)
class _HeldParticipant:
    """Someone whose goodbye is noted in the journal and finishes on C{gone()}."""

    nick = None
    via = "fake"
    echo = False
    peer = "192.0.2.3:40000"
    room = None

    def __init__(self, journal):
        self._journal = journal
        self._closing = defer.Deferred()

    def deliver(self, events):
        pass

    def pause_input(self):
        pass

    def resume_input(self):
        pass

    def close(self, reason):
        self._journal.append(f"goodbye: {reason}")
        return self._closing

    def gone(self):
        self._closing.callback(None)


def connect_user(service, reactor, participant, nick=None):
    """Give C{participant} a real session on C{service}, joined as C{nick} if given."""
    Session(participant, service.hub, service.registry, reactor).start(nick)
    reactor.advance(0)
    return participant


@implementer(IHistoryStore)
class JournalStore:
    """
    Stands in for L{history_store.SQLiteHistory} (same constructor): keeps what
    it is given and notes its start and stop, with the leaves it holds by then.
    """

    def __init__(self, journal, path, clock, retention_days=0):
        self.path = path
        self.retention_days = retention_days
        self.recorded = []
        self.asked = []
        self._journal = journal

    def start(self):
        self._journal.append("history starts")
        return defer.succeed(None)

    def stop(self):
        left = [e.nick for e in self.recorded if isinstance(e, Left)]
        self._journal.append(f"history stops; leaves recorded: {left}")
        return defer.succeed(None)

    def record_turn(self, events):
        self.recorded.extend(events)

    def recent(self, room, limit, before, after=None):
        self.asked.append((room, limit, before))
        return defer.succeed([])

    def newest_id(self):
        return defer.succeed(0)

    def prune(self, now):
        return defer.succeed(0)


class ShutdownOrderTests(SynchronousTestCase):
    """
    As makeService wires it: the TCP port closes before anyone is told
    goodbye, the UDP port stays open until the goodbyes are done, and the
    history stops last, with the leaves of the shutdown in it.
    """

    def test_tcp_closes_first_udp_last(self):
        journal = []
        reactor = JournalReactor(journal)
        service = tap.makeService(
            parse(*no_history(
                "--tcp", "tcp:4567:interface=127.0.0.1", "--udp", "udp:4568:interface=127.0.0.1"
            )),
            reactor=reactor,
        )
        service.startService()
        user = connect_user(service, reactor, _HeldParticipant(journal))  # no nick yet
        d = service.stopService()
        reactor.advance(0)  # the room's end-of-turn flush
        self.assertEqual(journal, ["TCP stops listening", "goodbye: server shutting down"])
        self.assertNoResult(d)
        user.gone()
        reactor.advance(0)
        self.assertEqual(
            journal,
            ["TCP stops listening", "goodbye: server shutting down", "UDP stops listening"],
        )
        self.successResultOf(d)

    def test_udp_closes_when_the_grace_runs_out(self):
        journal = []
        reactor = JournalReactor(journal)
        service = tap.makeService(
            parse(*no_history("--tcp", "7000", "--udp", "7001", "--shutdown-grace", "3")),
            reactor=reactor,
        )
        service.startService()
        # Never finishes its goodbye.
        connect_user(service, reactor, _HeldParticipant(journal), "alice")
        d = service.stopService()
        reactor.advance(2.9)
        self.assertNotIn("UDP stops listening", journal)
        reactor.advance(0.1)
        self.assertEqual(journal[-1], "UDP stops listening")
        self.successResultOf(d)

    def test_history_stops_after_the_goodbyes_with_the_leaves_in_it(self):
        journal = []
        reactor = JournalReactor(journal)
        reactor.advance(1_800_000_000)
        self.patch(
            history_store, "SQLiteHistory",
            lambda path, clock, retention_days, stats=None: JournalStore(journal, path, clock,
                                                                       retention_days),
        )
        path = os.path.join(temp_folder(self), "history.sqlite3")
        service = tap.makeService(
            parse("--tcp", "7000", "--udp", "7001", "--irc", "off", "--web", "off", "--history", path),
            reactor=reactor,
        )
        service.startService()
        self.assertEqual(journal, ["history starts"])
        alice = connect_user(service, reactor, _HeldParticipant(journal), "alice")
        bob = connect_user(service, reactor, _HeldParticipant(journal), "bob")
        d = service.stopService()
        reactor.advance(0)
        alice.gone()
        reactor.advance(0)
        self.assertEqual(journal[-1], "goodbye: server shutting down")
        bob.gone()
        reactor.advance(0)
        self.assertEqual(
            journal,
            [
                "history starts",
                "TCP stops listening",
                "goodbye: server shutting down",
                "goodbye: server shutting down",
                "UDP stops listening",
                "history stops; leaves recorded: ['alice', 'bob']",
            ],
        )
        self.successResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])


class MakeServiceHistoryTests(SynchronousTestCase):
    """
    C{--history PATH}: the file is checked (and created) before anything
    listens, a L{history_store.HistoryService} child runs the store, the hub
    records to it and replays from it, and ids start above the newest stored.
    """

    def setUp(self):
        self.folder = temp_folder(self)
        self.path = os.path.join(self.folder, "history.sqlite3")
        self.reactor = UDPMemoryReactor()
        self.reactor.advance(1_800_000_000)  # 2027: ids from a clock at 0 would be negative

    def make(self, *argv):
        return tap.makeService(
            parse("--tcp", "7000", "--udp", "off", "--history", self.path, *argv),
            reactor=self.reactor,
        )

    def test_history_service_runs_the_store(self):
        service = self.make("--history-days", "7")
        self.assertTrue(os.path.exists(self.path), "prepare creates the file at once")
        [child] = [c for c in service if isinstance(c, history_store.HistoryService)]
        store = child.store
        self.assertIsInstance(store, history_store.SQLiteHistory)
        self.assertTrue(verifyObject(IHistoryStore, store))
        self.assertEqual((store.path, store.retention_days), (self.path, 7))
        self.assertEqual(service.hub.turn.sinks, [store])
        self.assertEqual(history_store.prepare(self.path), 0)

    def test_a_relative_path_is_resolved_when_made(self):
        """twistd's daemon mode changes to --rundir later: the store must open the file checked."""
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.folder)
        service = tap.makeService(
            parse("--tcp", "7000", "--udp", "off", "--history", "relative.sqlite3"),
            reactor=self.reactor,
        )
        os.chdir(temp_folder(self))  # as twistd does with --rundir
        [child] = [c for c in service if isinstance(c, history_store.HistoryService)]
        expected = os.path.join(os.path.realpath(self.folder), "relative.sqlite3")
        self.assertEqual(os.path.realpath(child.store.path), expected)
        self.assertTrue(os.path.isabs(child.store.path))
        self.assertTrue(os.path.exists(expected))

    def fake_store(self):
        """Make the next makeService build a L{JournalStore}; fire with it."""
        made = []

        def factory(path, clock, retention_days, stats=None):
            made.append(JournalStore([], path, clock, retention_days))
            return made[-1]

        self.patch(history_store, "SQLiteHistory", factory)
        return made

    def test_replay_asks_the_store_for_the_last_n_lines(self):
        made = self.fake_store()
        service = self.make("--replay", "7", "--default-room", "#Main")
        [store] = made
        user = connect_user(service, self.reactor, _HeldParticipant([]), "alice")
        [(room, limit, before)] = store.asked
        self.assertEqual((room, limit), ("#main", 7))
        [joined] = [e for e in store.recorded if isinstance(e, Joined)]
        self.assertEqual((joined.nick, joined.room, before), ("alice", "#Main", joined.id))
        self.assertEqual(user.room, "#Main")

    def test_replay_0_asks_nothing(self):
        made = self.fake_store()
        service = self.make("--replay", "0")
        [store] = made
        connect_user(service, self.reactor, _HeldParticipant([]), "alice")
        self.assertEqual(store.asked, [])
        self.assertEqual([type(e) for e in store.recorded], [Joined])

    def test_ids_start_above_the_newest_stored(self):
        """A restart must not issue an id the history already holds, even one from ahead."""
        history_store.prepare(self.path)
        newest = ((int((1_900_000_000 - EPOCH) * 1000)) << 22) | 5  # a 2030 id, node 0
        history_store.write_events(
            self.path, [Said(newest, id_time(newest), "#lobby", "alice", "from the future")]
        )
        self.assertEqual(history_store.prepare(self.path), newest)
        service = self.make()
        issued = service.hub.ids.next()
        self.assertGreater(issued, newest)
        self.assertGreater(service.hub.ids.next(), issued)

    def test_a_bad_file_is_raised_with_a_reactor_given(self):
        with open(self.path, "wb") as f:
            f.write(b"not a database\n" * 20)
        with self.assertRaises(history_store.HistoryFileError) as caught:
            self.make()
        self.assertIn(self.path, str(caught.exception))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"not a database\n" * 20)
        self.assertEqual(sorted(os.listdir(self.folder)), ["history.sqlite3"])

    def test_a_bad_file_under_twistd_is_one_line_and_exit_1(self):
        """The global reactor: the service owns the process (end to end in test_history_e2e)."""
        with open(self.path, "wb") as f:
            f.write(b"not a database\n" * 20)
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            tap.makeService(parse("--tcp", "7000", "--udp", "off", "--history", self.path))
        self.assertEqual(raised.exception.code, 1)
        [line] = err.getvalue().splitlines()
        self.assertTrue(line.startswith(f"chatroom: History file {self.path} "), line)
        self.assertIn("left untouched", line)


class PluginTests(SynchronousTestCase):
    """The dropin is found by twistd and costs nothing to import."""

    def chatroom_makers(self):
        return [p for p in getPlugins(IServiceMaker) if p.tapname == "chatroom"]

    def test_discoverable(self):
        makers = self.chatroom_makers()
        self.assertTrue(makers)
        maker = makers[0]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)

    def test_import_starts_nothing(self):
        """Importing the dropin loads no chatservice module and no reactor."""
        script = (
            "import sys, threading\n"
            "import twisted.plugins.chatroom as dropin\n"
            "print(dropin.chatroom.tapname)\n"
            "print(sorted(m for m in sys.modules if m.startswith('chatservice')))\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
            "print(threading.active_count())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=PROJECT_ROOT,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.decode().splitlines(), ["chatroom", "[]", "False", "1"])
