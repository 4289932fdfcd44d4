"""IRC message parsing and building (C{chatservice.frontends.ircwire}), per the Modern IRC documents."""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.frontends import ircwire


class ParseTests(SynchronousTestCase):
    def test_command_and_params(self):
        m = ircwire.parse(b"privmsg #lobby :hello there")
        self.assertEqual((m.command, m.params), ("PRIVMSG", ("#lobby", "hello there")))

    def test_source_and_middle_params(self):
        m = ircwire.parse(b":nick!u@h USER guest 0 * :Real Name")
        self.assertEqual(m.source, "nick!u@h")
        self.assertEqual(m.params, ("guest", "0", "*", "Real Name"))

    def test_empty_trailing_kept(self):
        self.assertEqual(ircwire.parse(b"TOPIC #a :").params, ("#a", ""))

    def test_trailing_with_colons_and_spaces(self):
        self.assertEqual(ircwire.parse(b"PRIVMSG #a ::-) a  b").params, ("#a", ":-) a  b"))

    def test_blank_is_none(self):
        self.assertIsNone(ircwire.parse(b""))
        self.assertIsNone(ircwire.parse(b"   "))

    def test_tags(self):
        m = ircwire.parse(b"@+draft/reply=12;time=2026-01-01T00:00:00.000Z;a=b\\sc PING x")
        self.assertEqual(m.tags, {"+draft/reply": "12", "time": "2026-01-01T00:00:00.000Z",
                                  "a": "b c"})
        self.assertEqual(m.client_tags_size, len(b"+draft/reply=12") + 1)

    def test_tag_value_escapes_round_trip(self):
        value = "a;b c\\d\r\ne"
        self.assertEqual(ircwire.unescape_tag_value(ircwire.escape_tag_value(value)), value)
        self.assertEqual(ircwire.unescape_tag_value("x\\"), "x")
        self.assertEqual(ircwire.unescape_tag_value("\\b"), "b")

    def test_message_part_limit(self):
        """510 bytes of message (512 with CRLF) is the most; one more is too long."""
        ok = b"PRIVMSG #a :" + b"x" * (510 - len(b"PRIVMSG #a :"))
        self.assertEqual(len(ircwire.parse(ok).params[1]), 510 - 12)
        self.assertRaises(ircwire.TooLong, ircwire.parse, ok + b"x")

    def test_tags_do_not_count_against_the_message(self):
        tags = b"@" + b"a=" + b"v" * 4000 + b" "
        message = b"PRIVMSG #a :" + b"x" * 400
        self.assertEqual(ircwire.parse(tags + message).command, "PRIVMSG")

    def test_tag_section_limit(self):
        tags = b"@a=" + b"v" * 8190 + b" "
        self.assertRaises(ircwire.TooLong, ircwire.parse, tags + b"PING x")

    def test_client_tags_limit(self):
        tags = b"@+a=" + b"v" * 4094 + b" "
        self.assertRaises(ircwire.TooLong, ircwire.parse, tags + b"PING x")

    def test_invalid_utf8_replaced(self):
        self.assertEqual(ircwire.parse(b"PRIVMSG #a :\xff").params[1], "\ufffd")


class BuildTests(SynchronousTestCase):
    def test_line(self):
        self.assertEqual(ircwire.line("srv", "001", "me", "Welcome here"),
                         ":srv 001 me :Welcome here\r\n")
        self.assertEqual(ircwire.line("a!b@c", "JOIN", "#x"), ":a!b@c JOIN #x\r\n")
        self.assertEqual(ircwire.line(None, "PING", ""), "PING :\r\n")

    def test_trailing_always(self):
        self.assertEqual(ircwire.trailing("srv", "PONG", "srv", "tok"), ":srv PONG srv :tok\r\n")

    def test_tags_written_first(self):
        self.assertEqual(
            ircwire.line("n!c@s", "PRIVMSG", "#a", "hi x", tags={"time": "T", "k": "a b"}),
            "@time=T;k=a\\sb :n!c@s PRIVMSG #a :hi x\r\n")

    def test_round_trip(self):
        text = ircwire.trailing("n!c@s", "PRIVMSG", "#a", ":) hi")
        m = ircwire.parse(text.rstrip("\r\n").encode())
        self.assertEqual((m.source, m.command, m.params), ("n!c@s", "PRIVMSG", ("#a", ":) hi")))
