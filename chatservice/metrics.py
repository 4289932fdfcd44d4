# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics: the service's figures (L{chatservice.core.stats}) as text at /metrics.

Served by prometheus-client's own Twisted resource, which renders in the
reactor's thread pool, so a scrape never holds up the chat; what it reads is
kept up to date as it changes (plain integers in dicts with fixed keys), so a
scrape never walks the users either.  The process's own figures (memory, CPU,
open files) come from prometheus-client's process collector.
"""

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.twisted import MetricsResource
from twisted.web import resource, server

#: Metric names, and what they say (the README lists them too).
METRICS = {
    "chatroom_users": "Users online (with a nickname), per transport.",
    "chatroom_rooms": "Rooms that exist now, the default room included.",
    "chatroom_messages_received": "Chat messages (lines, actions, private messages) users "
                                  "sent, per transport.",
    "chatroom_deliveries": "Events handed to users (lines, joins, notices...), per transport.",
    "chatroom_disconnects": "Sessions ended, by reason.",
    "chatroom_udp_retransmissions": "UDP frames sent again because no ACK came.",
    "chatroom_history_write_seconds": "Time from asking for a history write to its commit.",
    "chatroom_history_write_failures": "History writes that failed (their records are lost).",
    "chatroom_send_queue_bytes": "Output waiting in the server's send queues (beyond the "
                                 "kernel's buffers), per transport.",
}


def _labelled(family, table: dict):
    for key, value in sorted(table.items(), key=lambda item: str(item[0])):
        family.add_metric([str(key)], value)
    return family


class ChatCollector:
    """Reads the hub's L{Stats} when scraped."""

    def __init__(self, hub) -> None:
        self._hub = hub

    def collect(self):
        stats = self._hub.stats
        yield _labelled(GaugeMetricFamily("chatroom_users", METRICS["chatroom_users"],
                                          labels=["transport"]), dict(stats.users))
        yield GaugeMetricFamily("chatroom_rooms", METRICS["chatroom_rooms"],
                                value=self._hub.room_count)
        for name, table in (("chatroom_messages_received", stats.received),
                            ("chatroom_deliveries", stats.deliveries)):
            yield _labelled(CounterMetricFamily(name, METRICS[name], labels=["transport"]),
                            dict(table))
        yield _labelled(CounterMetricFamily("chatroom_disconnects",
                                            METRICS["chatroom_disconnects"], labels=["reason"]),
                        dict(stats.disconnects))
        yield CounterMetricFamily("chatroom_udp_retransmissions",
                                  METRICS["chatroom_udp_retransmissions"],
                                  value=stats.udp_retransmissions)
        writes = stats.history_writes
        yield HistogramMetricFamily("chatroom_history_write_seconds",
                                    METRICS["chatroom_history_write_seconds"],
                                    buckets=writes.cumulative(), sum_value=writes.sum)
        yield CounterMetricFamily("chatroom_history_write_failures",
                                  METRICS["chatroom_history_write_failures"],
                                  value=stats.history_write_failures)
        yield _labelled(GaugeMetricFamily("chatroom_send_queue_bytes",
                                          METRICS["chatroom_send_queue_bytes"],
                                          labels=["transport"]), dict(stats.queued_bytes))


def registry_for(hub) -> CollectorRegistry:
    """A registry of the chat's metrics and the process's (not the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChatCollector(hub))
    ProcessCollector(registry=registry)
    return registry


def metrics_resource(hub):
    """The /metrics resource: Prometheus text, rendered in the reactor's thread pool."""
    return MetricsResource(registry_for(hub))


def metrics_site(hub) -> server.Site:
    """A Site of its own for C{--metrics ENDPOINT}: /metrics, and nothing else."""
    root = resource.Resource()
    root.putChild(b"metrics", metrics_resource(hub))
    site = server.Site(root)
    site.noisy = False
    return site
