"""
Tests for L{chatservice.core.commands}: one line of text to one command value.
"""

from twisted.trial.unittest import SynchronousTestCase

import re

from chatservice.core.commands import (
    HELP_LINES,
    HISTORY_MAX,
    Help,
    History,
    Join,
    Me,
    Msg,
    Nick,
    Part,
    Quit,
    Rooms,
    Say,
    Topic,
    Who,
    parse,
)
from chatservice.core.errors import BadUsage, ChatError, UnknownCommand


class ParseTests(SynchronousTestCase):
    """parse() turns a line into a command, None, or a refusal."""

    def assertRefused(self, error, line, text):
        with self.assertRaises(error) as caught:
            parse(line)
        self.assertIsInstance(caught.exception, ChatError)
        self.assertEqual(str(caught.exception), text)

    def test_plain_text_is_say(self):
        """A line not starting with / is said as it is."""
        self.assertEqual(parse("hello there"), Say("hello there"))

    def test_say_keeps_spacing(self):
        """Spaces inside and around a plain line are kept."""
        self.assertEqual(parse("  two  spaces "), Say("  two  spaces "))

    def test_blank_is_none(self):
        """Empty and whitespace-only lines are ignored."""
        for line in ["", " ", "   ", "\t"]:
            self.assertIsNone(parse(line))

    def test_double_slash_says_slash(self):
        """//text says /text."""
        self.assertEqual(parse("//text"), Say("/text"))
        self.assertEqual(parse("//who"), Say("/who"))

    def test_help(self):
        """/help asks for the command list."""
        self.assertEqual(parse("/help"), Help())

    def test_who(self):
        """/who asks who is in the current room."""
        self.assertEqual(parse("/who"), Who())
        self.assertEqual(parse("/who"), Who(None))

    def test_msg(self):
        """/msg NICK text is a private message; the text keeps its inner spaces."""
        self.assertEqual(parse("/msg bob hi there"), Msg("bob", "hi there"))
        self.assertEqual(parse("/msg bob   hi  there "), Msg("bob", "hi  there"))

    def test_msg_without_arguments(self):
        """/msg alone is a usage error."""
        self.assertRefused(BadUsage, "/msg", "usage: /msg NICK text")

    def test_msg_without_text(self):
        """/msg NICK without text is a usage error."""
        self.assertRefused(BadUsage, "/msg bob", "usage: /msg NICK text")
        self.assertRefused(BadUsage, "/msg bob   ", "usage: /msg NICK text")

    def test_me(self):
        """/me text is an action."""
        self.assertEqual(parse("/me waves"), Me("waves"))

    def test_me_without_text(self):
        """/me alone is a usage error."""
        self.assertRefused(BadUsage, "/me", "usage: /me text")

    def test_nick(self):
        """/nick NAME asks for a nickname."""
        self.assertEqual(parse("/nick alice"), Nick("alice"))

    def test_nick_without_name(self):
        """/nick alone is a usage error."""
        self.assertRefused(BadUsage, "/nick", "usage: /nick NAME")

    def test_quit_without_reason(self):
        """/quit alone has an empty reason."""
        self.assertEqual(parse("/quit"), Quit(""))

    def test_quit_with_reason(self):
        """/quit reason keeps the whole reason."""
        self.assertEqual(parse("/quit gone fishing"), Quit("gone fishing"))

    def test_unknown_command(self):
        """An unknown /word is refused with a hint."""
        self.assertRefused(UnknownCommand, "/dance", "unknown command: /dance (try /help)")
        self.assertRefused(UnknownCommand, "/dance now", "unknown command: /dance (try /help)")

    def test_verbs_ignore_case(self):
        """Command words are case-insensitive; arguments keep their case."""
        self.assertEqual(parse("/WHO"), Who())
        self.assertEqual(parse("/Help"), Help())
        self.assertEqual(parse("/MSG Bob Hi"), Msg("Bob", "Hi"))
        self.assertEqual(parse("/Me Waves"), Me("Waves"))
        self.assertEqual(parse("/NICK Alice"), Nick("Alice"))
        self.assertEqual(parse("/QUIT Bye"), Quit("Bye"))


class RoomCommandTests(SynchronousTestCase):
    """/join, /part, /rooms, /who, /topic and /history: an optional leading #room, then the rest."""

    def assertRefused(self, line, text):
        with self.assertRaises(BadUsage) as caught:
            parse(line)
        self.assertEqual(caught.exception.kind, "bad-usage")
        self.assertEqual(str(caught.exception), text)

    def test_join(self):
        """/join #room names one room, spaces around it ignored; its case is kept."""
        self.assertEqual(parse("/join #dev"), Join("#dev"))
        self.assertEqual(parse("/join   #Dev  "), Join("#Dev"))
        self.assertEqual(parse("/JOIN #dev"), Join("#dev"))

    def test_join_passes_the_name_on_unchecked(self):
        """A malformed name is the hub's to refuse (InvalidRoom), not a usage error."""
        self.assertEqual(parse("/join dev"), Join("dev"))

    def test_join_usage(self):
        """/join alone, or with two words, is a usage error."""
        for line in ["/join", "/join   ", "/join #a #b", "/join #a now"]:
            self.assertRefused(line, "usage: /join #room")

    def test_part(self):
        """/part [#room] [reason]: both optional, the reason keeps its inner spaces."""
        self.assertEqual(parse("/part"), Part(None, ""))
        self.assertEqual(parse("/part #dev"), Part("#dev", ""))
        self.assertEqual(parse("/part #dev  gone  fishing "), Part("#dev", "gone  fishing"))
        self.assertEqual(parse("/part gone fishing"), Part(None, "gone fishing"))

    def test_rooms(self):
        """/rooms takes at most one word: the text room names must contain."""
        self.assertEqual(parse("/rooms"), Rooms())
        self.assertEqual(parse("/ROOMS "), Rooms())
        self.assertEqual(parse("/rooms dev"), Rooms("dev"))
        self.assertEqual(parse("/rooms #dev"), Rooms("#dev"))
        self.assertRefused("/rooms dev ops", "usage: /rooms [text]")

    def test_who_room(self):
        """/who #room names the room; anything else after /who is a usage error."""
        self.assertEqual(parse("/who #dev"), Who("#dev"))
        self.assertEqual(parse("/who  #dev "), Who("#dev"))
        for line in ["/who bob", "/who #dev bob"]:
            self.assertRefused(line, "usage: /who [#room]")

    def test_topic_show(self):
        """/topic with no text asks for the topic, of the current room or the one named."""
        self.assertEqual(parse("/topic"), Topic(None, None))
        self.assertEqual(parse("/topic   "), Topic(None, None))
        self.assertEqual(parse("/topic #dev"), Topic("#dev", None))
        self.assertEqual(parse("/topic #dev  "), Topic("#dev", None))

    def test_topic_set(self):
        """/topic [#room] text sets it; the text keeps its inner spaces and its case."""
        self.assertEqual(parse("/topic Release  Friday"), Topic(None, "Release  Friday"))
        self.assertEqual(parse("/topic #dev release friday"), Topic("#dev", "release friday"))
        self.assertEqual(parse("/topic #dev #1 priority"), Topic("#dev", "#1 priority"))

    def test_history(self):
        """/history [#room] [N]: N from 1 to HISTORY_MAX, None when not given."""
        self.assertEqual(HISTORY_MAX, 200)
        self.assertEqual(parse("/history"), History(None, None))
        self.assertEqual(parse("/history #dev"), History("#dev", None))
        self.assertEqual(parse("/history 5"), History(None, 5))
        self.assertEqual(parse("/history #dev 5"), History("#dev", 5))
        self.assertEqual(parse("/history 1"), History(None, 1))
        self.assertEqual(parse("/history #dev 200"), History("#dev", 200))
        self.assertEqual(parse("/history 007"), History(None, 7))

    def test_history_count_out_of_range(self):
        """0, 201, negatives, words, non-ASCII digits and two numbers are usage errors."""
        usage = "usage: /history [#room] [N], N from 1 to 200"
        for line in ["/history 0", "/history 201", "/history #dev 1000", "/history -5",
                     "/history +5", "/history five", "/history 5.0", "/history 1 2",
                     "/history \uff15", "/history \u0665", "/history #dev #ops",
                     "/history bob 5"]:
            self.assertRefused(line, usage)

    def test_help_ignores_arguments(self):
        """/help with words after it still lists the commands."""
        self.assertEqual(parse("/help join"), Help())


class HelpLinesTests(SynchronousTestCase):
    """The /help text names every command, with the descriptions in one column."""

    VERBS = ["join", "part", "rooms", "who", "topic", "history", "msg", "me", "nick", "quit",
             "help"]

    def test_every_command_listed(self):
        """Each command the parser knows has its own line, and no line names an unknown one."""
        listed = [re.match(r"  (/\S*)", line).group(1) for line in HELP_LINES[1:]]
        self.assertEqual(HELP_LINES[0], "commands:")
        self.assertEqual(sorted(listed), sorted(["/" + verb for verb in self.VERBS] + ["//text"]))
        for command in listed:
            if command != "//text":
                self.assertIsNot(type(_parsed_or_refused(command)), UnknownCommand)

    def test_descriptions_line_up(self):
        """Every description starts in the same column, two spaces after the longest usage."""
        starts = {re.match(r"  \S.*?  +(?=\S)", line).end() for line in HELP_LINES[1:]}
        self.assertEqual(len(starts), 1, HELP_LINES)
        usages = [re.match(r"  (\S.*?)  +\S", line).group(1) for line in HELP_LINES[1:]]
        self.assertEqual(starts, {2 + max(map(len, usages)) + 2})

    def test_fits_a_terminal(self):
        """Rendered as '* ' lines, no help line is wider than 79 columns."""
        for line in HELP_LINES:
            self.assertLessEqual(len("* " + line), 79, line)

    def test_history_bound_shown(self):
        """The /history line gives the real bound."""
        [line] = [line for line in HELP_LINES if line.startswith("  /history")]
        self.assertTrue(line.endswith(f"(at most {HISTORY_MAX})"), line)


def _parsed_or_refused(line):
    """parse(line), or the ChatError it raised (a usage error still means a known command)."""
    try:
        return parse(line)
    except ChatError as error:
        return error
