# -*- test-case-name: tests.test_room -*-
"""The contracts between the room and whatever carries a user's bytes.

The room sees only L{IParticipant}, so TCP, UDP and later IRC and WebSocket
users are alike to it; history, a Redis bridge or metrics are L{IEventSink}s.
"""

from zope.interface import Attribute, Interface


class IParticipant(Interface):
    """One person in the room, whatever carries their bytes."""

    nick = Attribute("Current nickname (display form), or None before joining.")
    via = Attribute("Short transport name shown by /who: 'tcp', 'udp', 'irc', 'ws'.")
    peer = Attribute("Where the user connects from, for logs: 'host:port'.")

    def deliver(events):
        """
        Show room events, in order, to this user.

        Never blocks; buffers within the user's bound.  The room calls this
        once per reactor turn with everything the user should see from that
        turn, and hands the very same tuple to every user who sees the same
        thing, so a transport can encode it once for all of them.

        @param events: a tuple of event values from L{chatservice.core.events}.
        """

    def close(reason):
        """
        Tell the user C{reason}, flush, hang up.

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
    """Something that consumes every room-wide event: history, bridge, metrics."""

    def record(event):
        """
        Take one room-wide event.

        May return a Deferred; the room logs its failure and goes on.
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
