# -*- test-case-name: tests.test_hub -*-
"""One room: its name, its members and its topic.  Nothing else.

Who is online, who holds which nick and when events go out are server-wide
(L{chatservice.core.hub}); a room only knows who is in it.
"""

from chatservice.core.names import fold


class Room:
    """
    A room.

    @ivar name: the display name, as its creator typed it (C{#Dev}).
    @ivar key: the folded name that identifies it (C{#dev}).
    @ivar members: participants in joining order (a dict used as an ordered set).
    """

    __slots__ = ("name", "key", "members", "topic", "topic_by", "topic_time")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = fold(name)
        self.members: dict = {}
        self.topic = ""
        self.topic_by = ""
        self.topic_time = 0.0

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, participant) -> bool:
        return participant in self.members

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self.members)})>"
