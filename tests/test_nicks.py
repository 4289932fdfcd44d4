"""
Tests for L{chatservice.core.nicks}: the nickname rules and the shared registry.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chatservice.core.errors import ChatError, InvalidNick, NickInUse
from chatservice.core.interfaces import INickRegistry
from chatservice.core.names import ROOM_NAME_MAX, fold, is_room_name
from chatservice.core.nicks import NICK_MAX_LENGTH, NickRegistry, casefold, validate


class ValidateTests(SynchronousTestCase):
    """validate() accepts IRC nicknames and nothing else."""

    def test_accepts_letters_digits_and_specials(self):
        """Letters, digits and _-[]{}\\|^ make a nick; it comes back unchanged."""
        for nick in ["a", "Z", "alice", "Bob42", "a-b", "x_y", "[a]", "{b}", "c\\d", "e|f", "g^h"]:
            self.assertEqual(validate(nick), nick)

    def test_may_start_with_any_special_but_dash(self):
        """A nick may start with _ [ ] { } \\ | or ^."""
        for first in "_[]{}\\|^":
            self.assertEqual(validate(first + "x"), first + "x")

    def test_accepts_32_characters(self):
        """Exactly 32 characters is allowed."""
        self.assertEqual(NICK_MAX_LENGTH, 32)
        self.assertEqual(validate("a" * 32), "a" * 32)

    def test_refuses_33_characters(self):
        """33 characters is one too many."""
        self.assertRaises(InvalidNick, validate, "a" * 33)

    def test_refuses_empty(self):
        """An empty nick is refused."""
        self.assertRaises(InvalidNick, validate, "")

    def test_refuses_leading_digit(self):
        """A nick must not start with a digit."""
        for nick in ["1abc", "0", "9x"]:
            self.assertRaises(InvalidNick, validate, nick)

    def test_refuses_leading_dash(self):
        """A nick must not start with '-'."""
        for nick in ["-abc", "-"]:
            self.assertRaises(InvalidNick, validate, nick)

    def test_refuses_other_characters(self):
        """Spaces, punctuation, controls and non-ASCII letters are refused."""
        for nick in ["a b", "a.b", "a@b", "a!", "é", "ali\u0441e", "a\n", "a\tb", "a\x00", "a/b", "ab "]:
            self.assertRaises(InvalidNick, validate, nick)

    def test_non_ascii_letter_refusal_says_ascii(self):
        """zo\u00eb is refused with a reason that says the letters must be ASCII."""
        with self.assertRaises(InvalidNick) as caught:
            validate("zo\u00eb")
        self.assertEqual(
            str(caught.exception),
            "invalid nickname zo\u00eb: use only ASCII letters, digits and _-[]{}\\|^",
        )

    def test_refusal_is_a_chat_error(self):
        """InvalidNick is shown to the user, so it is a ChatError with a reason."""
        with self.assertRaises(ChatError) as caught:
            validate("1abc")
        self.assertEqual(
            str(caught.exception), "invalid nickname 1abc: it must not start with a digit or '-'"
        )


class CasefoldTests(SynchronousTestCase):
    """casefold() is the one uniqueness key."""

    def test_ascii_case_is_folded(self):
        """Alice, alice and ALICE share a key."""
        self.assertEqual(casefold("Alice"), casefold("alice"))
        self.assertEqual(casefold("ALICE"), casefold("alice"))

    def test_different_nicks_differ(self):
        """Different nicks keep different keys."""
        self.assertNotEqual(casefold("alice"), casefold("alicia"))

    def test_only_ascii_is_folded(self):
        """KELVIN SIGN, dotted capital I and other look-alikes keep their own key."""
        self.assertEqual(casefold("\u212aATE"), "\u212aate")
        self.assertNotEqual(casefold("\u212aate"), casefold("kate"))
        self.assertEqual(casefold("\u0130\u00c9Z"), "\u0130\u00c9z")
        self.assertEqual(casefold("[A]{B}\\|^_-9"), "[a]{b}\\|^_-9")

    def test_one_folding_everywhere(self):
        """The registry and the command parser use the same ASCII folding."""
        self.assertEqual(fold("Kelvin\u212a"), "kelvin\u212a")
        registry = NickRegistry()
        registry.reserve("kate", object())
        self.assertIsNone(registry.holder("\u212aate"))
        self.assertIsNotNone(registry.holder("KATE"))


class NickRegistryTests(SynchronousTestCase):
    """NickRegistry reserves, renames and releases atomically."""

    def setUp(self):
        self.registry = NickRegistry()
        self.alice = object()
        self.bob = object()

    def test_provides_interface(self):
        """NickRegistry provides INickRegistry."""
        self.assertTrue(verifyObject(INickRegistry, self.registry))

    def test_reserve_returns_display_nick(self):
        """reserve() answers with the nick as written."""
        self.assertEqual(self.registry.reserve("Alice", self.alice), "Alice")
        self.assertIs(self.registry.holder("Alice"), self.alice)
        self.assertEqual(list(self.registry), ["Alice"])
        self.assertEqual(len(self.registry), 1)

    def test_reserve_refuses_invalid(self):
        """An invalid nick is refused and nothing is held."""
        self.assertRaises(InvalidNick, self.registry.reserve, "1abc", self.alice)
        self.assertEqual(len(self.registry), 0)

    def test_reserve_refuses_taken(self):
        """A nick somebody holds is refused for anybody else."""
        self.registry.reserve("alice", self.alice)
        self.assertRaises(NickInUse, self.registry.reserve, "alice", self.bob)
        self.assertIs(self.registry.holder("alice"), self.alice)

    def test_uniqueness_ignores_case(self):
        """Alice collides with alice."""
        self.registry.reserve("alice", self.alice)
        with self.assertRaises(NickInUse) as caught:
            self.registry.reserve("Alice", self.bob)
        self.assertEqual(str(caught.exception), "nickname Alice is taken, try another")
        self.assertIs(self.registry.holder("ALICE"), self.alice)
        self.assertEqual(list(self.registry), ["alice"])

    def test_holder_of_nobody(self):
        """holder() of a free nick is None."""
        self.assertIsNone(self.registry.holder("alice"))

    def test_release_frees(self):
        """A released nick can be taken by somebody else at once."""
        self.registry.reserve("alice", self.alice)
        self.registry.release("alice", self.alice)
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.registry.reserve("Alice", self.bob), "Alice")
        self.assertIs(self.registry.holder("alice"), self.bob)

    def test_release_ignores_case(self):
        """Releasing ALICE frees alice for its owner."""
        self.registry.reserve("alice", self.alice)
        self.registry.release("ALICE", self.alice)
        self.assertEqual(len(self.registry), 0)

    def test_release_by_non_owner_does_nothing(self):
        """Only the owner can free a nick."""
        self.registry.reserve("alice", self.alice)
        self.registry.release("alice", self.bob)
        self.assertIs(self.registry.holder("alice"), self.alice)
        self.assertEqual(len(self.registry), 1)

    def test_release_of_free_nick_does_nothing(self):
        """Releasing a nick nobody holds is harmless."""
        self.registry.release("alice", self.alice)
        self.assertEqual(len(self.registry), 0)

    def test_rename_moves(self):
        """rename() frees the old nick and holds the new one."""
        self.registry.reserve("alice", self.alice)
        self.assertEqual(self.registry.rename("alice", "alicia", self.alice), "alicia")
        self.assertIsNone(self.registry.holder("alice"))
        self.assertIs(self.registry.holder("alicia"), self.alice)
        self.assertEqual(list(self.registry), ["alicia"])

    def test_renamed_away_nick_is_free(self):
        """The old nick can be taken by somebody else after a rename."""
        self.registry.reserve("alice", self.alice)
        self.registry.rename("alice", "alicia", self.alice)
        self.assertEqual(self.registry.reserve("alice", self.bob), "alice")

    def test_rename_to_taken_keeps_old(self):
        """A rename to a taken nick is refused and the old nick stays held."""
        self.registry.reserve("alice", self.alice)
        self.registry.reserve("bob", self.bob)
        self.assertRaises(NickInUse, self.registry.rename, "alice", "BOB", self.alice)
        self.assertIs(self.registry.holder("alice"), self.alice)
        self.assertIs(self.registry.holder("bob"), self.bob)
        self.assertEqual(sorted(self.registry), ["alice", "bob"])

    def test_rename_to_invalid_keeps_old(self):
        """A rename to an invalid nick is refused and the old nick stays held."""
        self.registry.reserve("alice", self.alice)
        self.assertRaises(InvalidNick, self.registry.rename, "alice", "-alice", self.alice)
        self.assertIs(self.registry.holder("alice"), self.alice)
        self.assertEqual(list(self.registry), ["alice"])

    def test_rename_case_only(self):
        """Changing only the case of one's own nick is allowed."""
        self.registry.reserve("alice", self.alice)
        self.assertEqual(self.registry.rename("alice", "Alice", self.alice), "Alice")
        self.assertEqual(list(self.registry), ["Alice"])
        self.assertIs(self.registry.holder("alice"), self.alice)

    def test_rename_by_non_owner(self):
        """Renaming a nick one does not hold is a caller bug: KeyError, nothing changes."""
        self.registry.reserve("alice", self.alice)
        self.assertRaises(KeyError, self.registry.rename, "alice", "mallory", self.bob)
        self.assertIs(self.registry.holder("alice"), self.alice)
        self.assertIsNone(self.registry.holder("mallory"))


class RoomNameTests(SynchronousTestCase):
    """A room name is # and 1 to 50 ASCII letters, digits or -_. ; it folds like a nick."""

    def test_accepts(self):
        self.assertEqual(ROOM_NAME_MAX, 50)
        for name in ["#a", "#lobby", "#Dev", "#dev-ops", "#a_b", "#v1.2", "#9", "#-", "#.",
                     "#" + "x" * 50]:
            self.assertTrue(is_room_name(name), name)

    def test_refuses(self):
        """No #, # alone, 51 characters, spaces, other punctuation, controls, non-ASCII."""
        for name in ["", "#", "lobby", "##", "#a b", "#a,b", "#a!", "#a#", "&dev", "#dev\n",
                     "#d\u00e9v", "#\u212aate", "#a/b", "#" + "x" * 51, " #dev"]:
            self.assertFalse(is_room_name(name), repr(name))

    def test_names_fold_like_nicks(self):
        """#Dev and #dev are one room; the KELVIN SIGN is not a k (and is no room name)."""
        self.assertEqual(fold("#Dev"), fold("#dev"))
        self.assertEqual(fold("#DEV-Ops"), "#dev-ops")
