"""Units of L{chatservice.frontends.webwire}: the page's JSON to commands, events to JSON."""

import json

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.commands import (
    History, Join, Me, Msg, Nick, Part, Quit, Rooms, Say, Topic, Who,
)
from chatservice.core.errors import BadUsage, TooLong
from chatservice.core.events import (
    HistoryStart, Refusal, Replayed, RoomJoined, Said, WhoList,
)
from chatservice.frontends import webwire

BIG_ID = (1 << 62) + 12345  # past what a JavaScript number holds exactly


def parse(**message):
    return webwire.parse(json.dumps(message).encode(), 100)


class ParseTests(SynchronousTestCase):
    def test_every_message_type(self):
        cases = [
            (dict(type="hello", nick="bob"), webwire.Hello("bob", None)),
            (dict(type="hello", nick="bob", rooms={"#a": str(BIG_ID), "#b": None}),
             webwire.Hello("bob", {"#a": BIG_ID, "#b": None})),
            (dict(type="say", room="#a", text="hi"), Say("hi", room="#a")),
            (dict(type="me", room="#a", text="waves"), Me("waves", room="#a")),
            (dict(type="msg", nick="al", text="psst"), Msg("al", "psst")),
            (dict(type="msg", nick="al", text="nods", action=True), Msg("al", "nods", action=True)),
            (dict(type="nick", nick="robert"), Nick("robert")),
            (dict(type="join", room="#a"), Join("#a")),
            (dict(type="join", room="#a", since=str(BIG_ID)), Join("#a", since=BIG_ID)),
            (dict(type="part", room="#a", reason="bye"), Part("#a", "bye")),
            (dict(type="part", room="#a"), Part("#a", "")),
            (dict(type="rooms"), Rooms("")),
            (dict(type="rooms", containing="dev"), Rooms("dev")),
            (dict(type="who", room="#a"), Who("#a")),
            (dict(type="topic", room="#a"), Topic("#a", None)),
            (dict(type="topic", room="#a", text="t"), Topic("#a", "t")),
            (dict(type="history", room="#a", count=5, before="10"), History("#a", 5, before=10)),
            (dict(type="history", room="#a", after=str(BIG_ID)), History("#a", None, after=BIG_ID)),
            (dict(type="quit"), Quit("")),
            (dict(type="quit", reason="done"), Quit("done")),
        ]
        for message, command in cases:
            self.assertEqual(parse(**message), command, message)

    def test_refusals(self):
        for payload in (b"not json", b"[]", b'"x"', b"{}", b'{"type": 3}',
                        b'{"type": "nope"}', b'{"type": "say"}', b'{"type": "say", "text": 1}',
                        b'{"type": "join", "room": "#a", "since": "-1"}',
                        b'{"type": "join", "room": "#a", "since": "99999999999999999999"}',
                        b'{"type": "history", "count": 0}', b'{"type": "hello", "nick": "a",'
                        b' "rooms": ["#a"]}', b"\xff\xfe"):
            with self.assertRaises(BadUsage, msg=payload):
                webwire.parse(payload, 100)

    def test_what_json_allows_and_a_chat_cannot_show(self):
        """A lone surrogate (JSON's "\\ud800") is no character: it would break every
        recipient's encoding and the history's, so it is refused where it comes in."""
        for payload in (b'{"type": "say", "room": "#a", "text": "x\\ud800y"}',
                        b'{"type": "quit", "reason": "\\udfff"}',
                        b'{"type": "hello", "nick": "al", "rooms": {"#\\ud800": null}}',
                        b"[" * 5000,  # nesting past the parser's recursion limit
                        b'{"type": "history", "room": "#a", "count": 201}'):
            with self.assertRaises(BadUsage, msg=payload):
                webwire.parse(payload, 100)

    def test_text_longer_than_the_limit_in_utf8_bytes(self):
        self.assertEqual(webwire.parse(json.dumps({"type": "say", "text": "é" * 50}), 100),
                         Say("é" * 50))
        with self.assertRaises(TooLong):
            webwire.parse(json.dumps({"type": "say", "text": "é" * 51}), 100)


class EncodeTests(SynchronousTestCase):
    def decode(self, event):
        return json.loads(webwire.encode(event))

    def test_an_event_with_its_id_as_a_string(self):
        self.assertEqual(self.decode(Said(BIG_ID, 1.5, "#a", "bob", "hi")), {
            "type": "said", "id": str(BIG_ID), "time": 1.5, "room": "#a", "nick": "bob",
            "text": "hi", "notice": False, "tags": [],
        })

    def test_names_in_kebab_case_and_nested_values(self):
        self.assertEqual(self.decode(RoomJoined("#a", "t", 2, ("al", "bo")))["type"],
                         "room-joined")
        self.assertEqual(self.decode(WhoList("#a", (("al", "tcp"),)))["members"],
                         [["al", "tcp"]])
        replayed = self.decode(Replayed(Said(7, 1.0, "#a", "al", "x"), 2.0))
        self.assertEqual((replayed["type"], replayed["event"]["type"], replayed["event"]["id"]),
                         ("replayed", "said", "7"))
        self.assertEqual(self.decode(HistoryStart("#a", 3)), {"type": "history-start",
                                                             "room": "#a", "count": 3})
        self.assertEqual(self.decode(Refusal("too-long", "x", "s", "Say"))["kind"], "too-long")

    def test_text_is_utf8_not_escaped(self):
        self.assertIn("é".encode(), webwire.encode(Said(1, 1.0, "#a", "al", "é")))
