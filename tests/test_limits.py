"""
Tests for L{chatservice.core.limits}: admission by total and per source address.
"""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.errors import ChatError
from chatservice.core.limits import Admission, Limits, Refused


class AdmissionTests(SynchronousTestCase):
    """Admission caps clients in total and per address; 0 means no cap."""

    def admit_all(self, admission, hosts):
        for host in hosts:
            admission.admit(host)

    def test_counts_admitted(self):
        """Each admitted client counts once."""
        admission = Admission(max_clients=10, max_per_ip=10)
        self.admit_all(admission, ["10.0.0.1", "10.0.0.2", "10.0.0.1"])
        self.assertEqual(admission.total, 3)

    def test_refuses_over_total(self):
        """The client after max_clients is refused, whatever its address."""
        admission = Admission(max_clients=2, max_per_ip=0)
        self.admit_all(admission, ["10.0.0.1", "10.0.0.2"])
        with self.assertRaises(Refused) as caught:
            admission.admit("10.0.0.3")
        self.assertIsInstance(caught.exception, ChatError)
        self.assertEqual(str(caught.exception), "server full (2 clients), try later")
        self.assertEqual(admission.total, 2)

    def test_refuses_over_per_ip(self):
        """The client after max_per_ip from one address is refused; other addresses still get in."""
        admission = Admission(max_clients=0, max_per_ip=2)
        self.admit_all(admission, ["10.0.0.1", "10.0.0.1"])
        with self.assertRaises(Refused) as caught:
            admission.admit("10.0.0.1")
        self.assertEqual(str(caught.exception), "too many connections from your address (max 2)")
        admission.admit("10.0.0.2")
        self.assertEqual(admission.total, 3)

    def test_zero_total_is_unlimited(self):
        """max_clients 0 admits any number."""
        admission = Admission(max_clients=0, max_per_ip=0)
        self.admit_all(admission, [f"10.0.{n // 256}.{n % 256}" for n in range(1000)])
        self.assertEqual(admission.total, 1000)

    def test_zero_per_ip_is_unlimited(self):
        """max_per_ip 0 admits any number from one address."""
        admission = Admission(max_clients=0, max_per_ip=0)
        self.admit_all(admission, ["10.0.0.1"] * 500)
        self.assertEqual(admission.total, 500)

    def test_release_makes_room_in_total(self):
        """A released client frees its place in the total."""
        admission = Admission(max_clients=1, max_per_ip=0)
        admission.admit("10.0.0.1")
        admission.release("10.0.0.1")
        self.assertEqual(admission.total, 0)
        admission.admit("10.0.0.2")
        self.assertEqual(admission.total, 1)

    def test_release_makes_room_per_ip(self):
        """A released client frees its place for its address."""
        admission = Admission(max_clients=0, max_per_ip=1)
        admission.admit("10.0.0.1")
        self.assertRaises(Refused, admission.admit, "10.0.0.1")
        admission.release("10.0.0.1")
        admission.admit("10.0.0.1")
        self.assertEqual(admission.total, 1)

    def test_release_unknown_does_nothing(self):
        """Releasing an address with nobody admitted changes no count."""
        admission = Admission(max_clients=1, max_per_ip=1)
        admission.admit("10.0.0.1")
        admission.release("10.0.0.2")
        self.assertEqual(admission.total, 1)
        self.assertRaises(Refused, admission.admit, "10.0.0.3")

    def test_release_twice_counts_once(self):
        """Releasing more than was admitted never drives the counts below zero."""
        admission = Admission(max_clients=2, max_per_ip=1)
        admission.admit("10.0.0.1")
        admission.release("10.0.0.1")
        admission.release("10.0.0.1")
        self.assertEqual(admission.total, 0)
        self.admit_all(admission, ["10.0.0.1", "10.0.0.2"])
        self.assertRaises(Refused, admission.admit, "10.0.0.3")


class LimitsTests(SynchronousTestCase):
    """The named limits' defaults, as the README and --help give them."""

    def test_room_defaults(self):
        """1000 rooms in the service, 20 per user."""
        limits = Limits()
        self.assertEqual((limits.max_rooms, limits.max_rooms_per_user), (1000, 20))

    def test_refused_kind(self):
        """A refused connection says why with its own kind."""
        self.assertEqual(Refused.kind, "server-full")
