# -*- test-case-name: tests.test_hub -*-
"""The contracts between the hub and whatever carries a user's bytes or keeps its events.

The hub sees only L{IParticipant}, so TCP, UDP and later IRC and WebSocket
users are alike to it; history, a Redis bridge or metrics are L{IEventSink}s;
the history is also an L{IHistoryStore} the hub asks for replays.
"""

from zope.interface import Attribute, Interface


class IParticipant(Interface):
    """One person in the room, whatever carries their bytes."""

    nick = Attribute("Current nickname (display form), or None before joining.")
    via = Attribute("Short transport name shown by /who: 'tcp', 'udp', 'irc', 'ws'.")
    peer = Attribute("Where the user connects from, for logs: 'host:port'.")
    room = Attribute(
        "The room plain lines go to on the line protocols (display name), or None; "
        "set by the session. Line front-ends mark events from other rooms."
    )
    echo = Attribute(
        "Whether the user is shown its own room lines "
        "(IRC's echo-message capability)."
    )

    def deliver(batch):
        """
        Show events, in order, to this user.

        Never blocks; buffers within the user's bound.  The hub calls this
        once per reactor turn with everything the user should see from that
        turn.  A L{chatservice.core.batch.Batch} iterates over the events; its
        C{parts} are slices of runs shared with other users, so a front-end
        encodes each run once for all of them and cuts slices for each user.

        @param batch: a L{chatservice.core.batch.Batch}.
        """

    def close(reason):
        """
        Tell the user C{reason}, flush, hang up: nothing more.

        Only the session calls this, once, when it has ended; the front-end
        never ends the session from here (when its connection goes, it tells
        the session with C{connection_lost}).

        @return: a Deferred firing once the user is gone; it never fails.
        """

    def pause_input():
        """
        The session is holding this user's lines (over the flood rate, or
        waiting on the nick registry): hand it no more until L{resume_input}.

        A transport that can stop reading (TCP) stops reading its socket, so
        the kernel holds the excess and the server holds at most one read.
        One that cannot stop its sender (UDP) does nothing: the session's own
        bounded queue holds the lines and refuses past its bound.
        """

    def resume_input():
        """
        Hand over what was held back, then read again.

        May be called from a timer or from inside the session's own C{handle},
        and the lines it hands over may call L{pause_input} again.
        """


class IEventSink(Interface):
    """Something that consumes every stored event: history, bridge, metrics."""

    def record_turn(events):
        """
        Take one turn's events of L{chatservice.core.events.STORED_EVENTS}
        (a non-empty tuple, in id order), after the members have been handed
        them, at the end of the turn.  One call a turn, not one an event: a
        busy turn holds thousands, and a call per event cost the fan-out a
        tenth of its rate.

        Never blocks.  May return a Deferred; the hub logs its failure and goes on.
        """


class IHistoryStore(IEventSink):
    """Where room history is kept, and asked for (the SQLite store; later PostgreSQL)."""

    def recent(room, limit, before, after=None):
        """
        The last C{limit} public lines (L{chatservice.core.events.PUBLIC_LINES})
        of C{room} (its folded name) with an id below C{before}, oldest first,
        including what was recorded but not yet written.  Given C{after}, the
        first C{limit} lines with an id above it instead (what a client that
        saw C{after} missed, oldest first, so paging on leaves no gap).

        @return: a Deferred firing with a list of events.
        """

    def newest_id():
        """
        The highest id stored, so ids issued after a restart stay above it.

        @return: a Deferred firing with an int (0 when empty).
        """


class INickRegistry(Interface):
    """The one authority on who holds which nickname, shared by every transport.

    Any method may return a Deferred (a registry shared between nodes through
    Redis will), so callers go through C{defer.maybeDeferred}.
    """

    def reserve(nick, owner):
        """Claim C{nick} for C{owner}; return the display nick or raise a ChatError."""

    def rename(old, new, owner):
        """Atomically move C{owner} from C{old} to C{new}; return the new display nick."""

    def release(nick, owner):
        """Free C{nick} if C{owner} holds it."""
