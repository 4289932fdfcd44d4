"""
Tests for L{chatservice.logs} and its wiring: C{--log-level}, and the log
observer C{makeService} hands twistd (where it writes, what it filters out).

End-to-end runs of the real twistd are in L{tests.test_ops}.
"""

import io
import os
import shutil
import signal
import tempfile

from twisted.application.app import ServerOptions as BaseServerOptions
from twisted.application.service import Application
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python import syslog
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from chatservice import logs, tap


def twistd_config(*argv):
    """twistd's own options, parsed as twistd would, with chatroom as the subcommand."""
    config = ServerOptions()
    config.parseOptions(list(argv))
    return config


class ImmediateReactor:
    """Just enough reactor for a SIGUSR1 rotation: callFromThread runs at once."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


def emit(observer, level, text):
    Logger(namespace="test", observer=observer).emit(level, text)


class LevelTests(SynchronousTestCase):
    """C{--log-level}'s values."""

    def test_names(self):
        self.assertEqual([logs.log_level(name) for name in logs.LEVELS], [
            LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical,
        ])
        self.assertEqual(logs.log_level(" Info "), LogLevel.info)

    def test_default_is_info(self):
        self.assertEqual(logs.log_level(logs.DEFAULT_LEVEL), LogLevel.info)

    def test_other_names(self):
        for name in ("", "verbose", "warning", "0", "trace"):
            with self.assertRaises(ValueError, msg=name) as raised:
                logs.log_level(name)
            self.assertIn("--log-level", str(raised.exception))

    def test_filtered_keeps_its_level_and_above(self):
        seen = []
        observer = logs.filtered(seen.append, LogLevel.info)
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            emit(observer, level, level.name)
        self.assertEqual([e["log_format"] for e in seen], ["info", "warn", "error"])


class TwistdObserverTests(SynchronousTestCase):
    """The observer is twistd's own choice of destination, behind a level filter."""

    def setUp(self):
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.directory = tempfile.mkdtemp(prefix="chatroom-logs-")
        self.addCleanup(shutil.rmtree, self.directory)

    def test_is_twistd(self):
        self.assertTrue(logs.is_twistd(twistd_config("-n", "chatroom")))
        self.assertIsInstance(twistd_config("-n", "chatroom"), BaseServerOptions)
        self.assertFalse(logs.is_twistd(None))
        self.assertFalse(logs.is_twistd(tap.Options()))

    def test_foreground_writes_stdout(self):
        out = io.StringIO()
        self.patch(logs.sys, "stdout", out)
        for argv in (("-n",), ("-n", "--logfile=-")):
            out.truncate(0)
            observer = logs.twistd_observer(twistd_config(*argv, "chatroom"), LogLevel.info, None)
            emit(observer, LogLevel.debug, "wire detail")
            emit(observer, LogLevel.info, "alice joined")
            self.assertNotIn("wire detail", out.getvalue(), argv)
            self.assertIn("[test#info] alice joined", out.getvalue(), argv)

    def test_daemon_cannot_log_to_stdout(self):
        with self.assertRaises(SystemExit) as raised:
            logs.twistd_observer(twistd_config("--logfile=-", "chatroom"), LogLevel.info, None)
        self.assertEqual(raised.exception.code, "Daemons cannot log to stdout, exiting!")

    def test_logfile_gets_the_level_and_rotates_on_sigusr1(self):
        path = os.path.join(self.directory, "chat.log")
        observer = logs.twistd_observer(
            twistd_config(f"--logfile={path}", "chatroom"), LogLevel.warn, ImmediateReactor()
        )
        emit(observer, LogLevel.info, "alice joined")
        emit(observer, LogLevel.warn, "bob is too slow")
        with open(path) as log:
            text = log.read()
        self.assertNotIn("alice joined", text)
        self.assertIn("[test#warn] bob is too slow", text)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        self.assertTrue(os.path.exists(path + ".1"))

    def test_daemon_default_logfile(self):
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        observer = logs.twistd_observer(twistd_config("chatroom"), LogLevel.info, None)
        emit(observer, LogLevel.info, "started")
        with open(os.path.join(self.directory, logs.TWISTD_DEFAULT_LOGFILE)) as log:
            self.assertIn("started", log.read())

    def test_syslog(self):
        made = []

        class FakeSyslogObserver:
            def __init__(self, prefix):
                made.append(self)
                self.prefix = prefix
                self.events = []

            def emit(self, event):
                self.events.append(event)

        self.patch(syslog, "SyslogObserver", FakeSyslogObserver)
        config = twistd_config("--syslog", "--prefix=chat", "chatroom")
        observer = logs.twistd_observer(config, LogLevel.info, None)
        emit(observer, LogLevel.debug, "wire detail")
        emit(observer, LogLevel.info, "alice joined")
        [syslog_observer] = made
        self.assertEqual(syslog_observer.prefix, "chat")
        self.assertEqual([e["log_format"] for e in syslog_observer.events], ["alice joined"])


class MakeServiceLoggingTests(SynchronousTestCase):
    """
    Under twistd (its options are our parent, the reactor is the global one)
    makeService puts the filtered observer on the Application, and a port
    that cannot be had exits 1 in the foreground, raises in daemon mode.
    """

    def setUp(self):
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        self.directory = tempfile.mkdtemp(prefix="chatroom-logs-")
        self.addCleanup(shutil.rmtree, self.directory)

    def made(self, *argv):
        # Every argv here ends with chatroom's own options: keep no history file
        # (the default would be created in the working directory).
        config = twistd_config(*argv, "--history", "none")
        options = config.subOptions
        self.assertIs(options.parent, config)
        return tap.makeService(options)

    def test_observer_on_the_application(self):
        path = os.path.join(self.directory, "chat.log")
        service = self.made(f"--logfile={path}", "chatroom", "--log-level", "warn")
        application = Application("chatroom")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        emit(observer, LogLevel.info, "alice joined")
        emit(observer, LogLevel.error, "it broke")
        with open(path) as log:
            text = log.read()
        self.assertNotIn("alice joined", text)
        self.assertIn("it broke", text)

    def test_twistd_logger_option_wins(self):
        """twistd --logger=FACTORY names the observer; chatroom then sets none."""
        service = self.made("--logger=twisted.logger.globalLogPublisher", "chatroom")
        application = Application("chatroom")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def held_port(self):
        import socket

        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        return holder.getsockname()[1]

    def test_foreground_exits_1_if_it_cannot_listen(self):
        port = self.held_port()
        service = self.made(
            "-n", "chatroom", "--tcp", f"tcp:{port}:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off"
        )
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        self.assertEqual(raised.exception.code, 1)

    def test_daemon_raises_if_it_cannot_listen(self):
        port = self.held_port()
        path = os.path.join(self.directory, "chat.log")
        service = self.made(
            f"--logfile={path}", "chatroom",
            "--tcp", f"tcp:{port}:interface=127.0.0.1", "--udp", "off", "--irc", "off", "--web", "off",
        )
        error = self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertEqual(str(error), f"TCP port {port} on 127.0.0.1: address already in use")
