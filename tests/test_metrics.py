"""
Metrics: the figures kept as they change (L{chatservice.core.stats}), and Prometheus text at
/metrics, read over loopback from the real service while line, web and UDP-less users chat.
"""

import os
import shutil
import tempfile

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import client as web_client
from twisted.web.server import Site

from chatservice import tap
from chatservice.core.stats import Histogram, Stats, disconnect_kind
from chatservice.frontends.reliable import ReliableChannel
from chatservice.frontends.stream import SendQueue
from tests import support
from tests.test_web import WebHarness


class StatsTests(SynchronousTestCase):
    def test_histogram_buckets_are_cumulative(self):
        histogram = Histogram((0.01, 0.1))
        for value in (0.005, 0.05, 0.05, 3.0):
            histogram.observe(value)
        self.assertEqual(histogram.cumulative(), [("0.01", 1), ("0.1", 3), ("+Inf", 4)])
        self.assertEqual((histogram.count, histogram.sum), (4, 3.105))

    def test_disconnect_kinds(self):
        self.assertEqual(
            [disconnect_kind(r) for r in ("quit", "see you", "connection lost",
                                           "too slow to read", "flooding", "timed out",
                                           "server shutting down", "internal error")],
            ["quit", "quit", "lost", "too_slow", "flooding", "timed_out", "shutdown", "other"])

    def test_send_queue_bytes_follow_the_queue(self):
        stats = Stats()
        transport = StringTransport()
        queue = SendQueue(transport, 100, lambda: None, stats.queued_bytes, "tcp")
        queue.pauseProducing()
        queue.write(b"x" * 30)
        queue.write(b"y" * 20)
        self.assertEqual(stats.queued_bytes["tcp"], 50)
        queue.resumeProducing()
        self.assertEqual(stats.queued_bytes["tcp"], 0)
        queue.pauseProducing()
        queue.write(b"z" * 101)  # past the bound: dropped, and no longer counted
        self.assertEqual(stats.queued_bytes["tcp"], 0)

    def test_udp_retransmissions_are_counted(self):
        stats = Stats()
        clock = task.Clock()
        channel = ReliableChannel(clock, lambda datagram: None, lambda line: None,
                                  lambda reason: None, on_retransmit=stats.retransmitted)
        channel.send_line(b"hello")
        clock.advance(channel.rto + 0.001)
        self.assertEqual(stats.udp_retransmissions, channel.retransmitted)
        self.assertGreaterEqual(stats.udp_retransmissions, 1)
        channel.close()


def families(text: str) -> dict:
    """{(sample name, labels as a sorted tuple): value} from Prometheus text."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class MetricsServedTests(WebHarness):
    """/metrics on the web listener, read while users come, chat and go."""

    @defer.inlineCallbacks
    def scrape(self, port=None):
        agent = web_client.Agent(self.reactor)
        url = f"http://127.0.0.1:{port or self.web_port}/metrics".encode()
        response = yield agent.request(b"GET", url)
        body = yield web_client.readBody(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(
            b"text/plain"))
        return families(body.decode())

    @defer.inlineCallbacks
    def test_users_rooms_messages_deliveries_disconnects_history(self):
        alice = yield self.line_user("alice")
        bob = yield self.web_user("bob")
        yield alice.next_line()  # * bob joined
        before = yield self.scrape()
        self.assertEqual(before[("chatroom_users", (("transport", "tcp"),))], 1)
        self.assertEqual(before[("chatroom_users", (("transport", "web"),))], 1)
        self.assertEqual(before[("chatroom_rooms", ())], 1)
        alice.send(b"one\n")
        yield bob.next_of("said")
        bob.send(type="say", room="#lobby", text="two")
        yield alice.read_until("bob: two")
        bob.send(type="join", room="#dev")
        yield bob.next_of("room-joined")
        after = yield self.scrape()
        received = ("chatroom_messages_received_total",)
        self.assertEqual(after[received + ((("transport", "tcp"),),)], 1)
        self.assertEqual(after[received + ((("transport", "web"),),)], 1)
        deliveries = ("chatroom_deliveries_total",)
        # alice got bob's line; bob got alice's and his own (echoed), each counted once
        self.assertGreaterEqual(after[deliveries + ((("transport", "web"),),)]
                                - before[deliveries + ((("transport", "web"),),)], 2)
        self.assertEqual(after[("chatroom_rooms", ())], 2)
        bob.send(type="quit")
        yield bob.wait_closed()
        yield alice.read_until("* bob left (quit)")
        yield alice.abort()
        gone = yield self.scrape()
        self.assertEqual(gone[("chatroom_disconnects_total", (("reason", "quit"),))], 1)
        self.assertEqual(gone[("chatroom_disconnects_total", (("reason", "lost"),))], 1)
        self.assertEqual(gone[("chatroom_users", (("transport", "tcp"),))], 0)
        self.assertEqual(gone[("chatroom_users", (("transport", "web"),))], 0)
        # The lines went to the history; its writes were timed.
        self.assertGreaterEqual(gone[("chatroom_history_write_seconds_count", ())], 1)
        self.assertEqual(gone[("chatroom_history_write_failures_total", ())], 0)
        self.assertIn(("chatroom_send_queue_bytes", (("transport", "tcp"),)), gone)
        self.assertIn(("chatroom_udp_retransmissions_total", ()), gone)
        self.assertIn(("process_resident_memory_bytes", ()), gone)


class OwnMetricsListenerTests(WebHarness):
    """C{--metrics ENDPOINT}: a listener of their own, and none on the web listener."""

    def start_service(self, *extra):
        self.folder_history = tempfile.mkdtemp(prefix="chatroom-metrics-")
        self.addCleanup(shutil.rmtree, self.folder_history, True)
        options = tap.Options()
        options.parseOptions([
            "--tcp", "tcp:0:interface=127.0.0.1", "--udp", "off", "--irc", "off",
            "--web", "tcp:0:interface=127.0.0.1", "--metrics", "tcp:0:interface=127.0.0.1",
            "--history", os.path.join(self.folder_history, "h.sqlite3")])
        recorder = support.ListenRecorder(self.reactor)
        self.service = tap.makeService(options, reactor=recorder)
        self.service.startService()
        self.addCleanup(self.stop_service)
        sites = [port for port in recorder.tcp_ports if isinstance(port.factory, Site)]
        self.web_port = sites[0].getHost().port
        self.metrics_port = sites[1].getHost().port
        self.tcp_port = [port for port in recorder.tcp_ports
                         if not isinstance(port.factory, Site)][0].getHost().port

    @defer.inlineCallbacks
    def test_metrics_on_their_own_listener_only(self):
        yield self.line_user("alice")
        agent = web_client.Agent(self.reactor)
        response = yield agent.request(
            b"GET", f"http://127.0.0.1:{self.metrics_port}/metrics".encode())
        body = (yield web_client.readBody(response)).decode()
        self.assertEqual(families(body)[("chatroom_users", (("transport", "tcp"),))], 1)
        response = yield agent.request(
            b"GET", f"http://127.0.0.1:{self.web_port}/metrics".encode())
        yield web_client.readBody(response)
        self.assertEqual(response.code, 404)


class MetricsOptionTests(SynchronousTestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions([*argv, "--history", "none"])
        return options

    def test_values(self):
        self.assertEqual(self.parse()["metrics"], "web")
        self.assertIsNone(self.parse("--metrics", "off")["metrics"])
        self.assertEqual(self.parse("--metrics", "9100")["metrics"], "tcp:9100:backlog=1024")
        from twisted.python import usage

        self.assertRaises(usage.UsageError, self.parse, "--metrics", "bogus:1")
