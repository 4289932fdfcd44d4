"""
Tests for L{chatservice.core.commands}: one line of text to one command value.
"""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.commands import Help, Me, Msg, Nick, Quit, Say, Who, parse
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
        """/who asks who is online."""
        self.assertEqual(parse("/who"), Who())

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
