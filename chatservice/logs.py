# -*- test-case-name: tests.test_ops_logs -*-
"""How much C{twistd chatroom} logs: C{--log-level}, info unless asked.

twistd writes every event it is given, debug included, and its options have no
level.  Retransmission detail alone can fill most of a log, so chatroom hands
twistd a filtered observer instead: the documented way to choose twistd's log
observer is an L{ILogObserver} component on the Application (the
"Customizing twistd logging" section of Twisted's application howto).  An
observer given that way replaces the one twistd would build from C{--logfile},
C{--syslog} and C{-n}, so L{twistd_observer} builds that same one, from the
same options, and puts a L{LogLevelFilterPredicate} in front of it.

C{twist} (C{python -m twisted}) filters by level itself (its own
C{--log-level}, info by default) and never asks the Application, so nothing
here is used under it.
"""

import signal
import sys

from twisted.application.app import ServerOptions
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    InvalidLogLevelError,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile

#: The levels C{--log-level} takes, lowest first (Twisted's names).
LEVELS = ("debug", "info", "warn", "error", "critical")
#: Joins, leaves, start and stop, warnings and errors; no wire detail.
DEFAULT_LEVEL = "info"
#: twistd's log file when daemonized without C{--logfile}.
TWISTD_DEFAULT_LOGFILE = "twistd.log"


def log_level(name: str) -> LogLevel:
    """
    C{"debug"} -> L{LogLevel.debug}, and so on for L{LEVELS}.

    @raise ValueError: any other name.
    """
    try:
        return LogLevel.levelWithName(name.strip().lower())
    except InvalidLogLevelError:
        raise ValueError(f"--log-level: {name!r} is not one of {', '.join(LEVELS)}")


def filtered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """C{observer}, seeing only events at C{level} or above."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def is_twistd(parent_options) -> bool:
    """Whether C{twistd}'s options (not C{twist}'s, nor none) hold ours as a subcommand."""
    return isinstance(parent_options, ServerOptions)


def twistd_observer(config, level: LogLevel, reactor) -> ILogObserver:
    """
    The observer twistd would build from its own C{config}, filtered at C{level}.

    It mirrors twistd's choice on POSIX (C{UnixAppLogger._getLogObserver}):
    syslog with C{--syslog}; stdout with C{-n} and no C{--logfile}, or with
    C{--logfile=-}; otherwise the file C{--logfile} names (C{twistd.log} by
    default), reopened on SIGUSR1 for log rotation as twistd does.

    @param config: twistd's parsed options (C{ServerOptions}).
    @param reactor: where a SIGUSR1 rotation is run (signals arrive between
        reactor turns).
    @return: an L{ILogObserver} to set on the Application.
    """
    logfile = config.get("logfile") or ""
    # twistd sets "nodaemon" from -n and --debug before it builds the service.
    nodaemon = config.get("nodaemon") or config.get("debug")
    if config.get("syslog"):
        from twisted.python import syslog

        destination = LegacyLogObserverWrapper(syslog.SyslogObserver(config.get("prefix")).emit)
    elif logfile == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        destination = textFileLogObserver(sys.stdout)
    elif nodaemon and not logfile:
        destination = textFileLogObserver(sys.stdout)
    else:
        log_file = LogFile.fromFullPath(logfile or TWISTD_DEFAULT_LOGFILE)
        if not signal.getsignal(signal.SIGUSR1):
            signal.signal(
                signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(log_file.rotate)
            )
        destination = textFileLogObserver(log_file)
    return filtered(destination, level)
