"""
The benchmark harness must not rot: C{python -m bench.run --smoke} runs chatroom and the seed
baseline through every load shape at low rates (a few seconds, no IRC servers, no root) and
every receiver must get exactly its lines.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds; the smoke run itself takes well under a minute
SHAPES = {"loud": ("chatroom", "chatroom-irc", "chatroom-web", "seed"),
          "all": ("chatroom", "chatroom-irc", "chatroom-web", "seed"),
          "rooms": ("chatroom", "seed"), "udp": ("chatroom",)}


_RUN: dict = {}


def smoke_run() -> dict:
    """Run the smoke benchmark once per test process; both tests read the same run."""
    if not _RUN:
        with tempfile.TemporaryDirectory(prefix="bench-smoke-test-") as out:
            env = dict(os.environ,
                       PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.run(
                [sys.executable, "-m", "bench.run", "--smoke", "--out", out], cwd=str(REPO),
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
            _RUN["returncode"] = proc.returncode
            _RUN["stderr"] = proc.stderr.decode(errors="replace")
            path = Path(out) / "latest.json"
            _RUN["results"] = json.loads(path.read_text()) if path.exists() else {}
            md = Path(out) / "latest.md"
            _RUN["report"] = md.read_text() if md.exists() else ""
    return _RUN


class BenchSmokeTests(SynchronousTestCase):
    """One smoke run, checked shape by shape."""

    def setUp(self) -> None:
        run = smoke_run()
        self.stderr = run["stderr"]
        self.assertEqual(run["returncode"], 0, self.stderr[-3000:])
        self.results = run["results"]
        self.report = run["report"]

    def test_every_shape_counts_every_receiver_exactly(self) -> None:
        """
        Each shape ran on each server, and its lowest-rate step checked every receiver's exact
        count (none short, none over) and the sampled receivers' order, with no closed
        connection.
        """
        self.assertEqual(self.results["mode"], "smoke")
        for shape, servers in SHAPES.items():
            rows = self.results["shapes"].get(shape)
            self.assertTrue(rows, "shape %s missing: %s" % (shape, self.stderr[-2000:]))
            for users, row in rows.items():
                for server in servers:
                    res = row.get(server)
                    where = "%s N=%s on %s: %r" % (shape, users, server, res)
                    self.assertTrue(res and res.get("steps"), where)
                    first = min(res["steps"], key=lambda s: s["offered_msgs_per_s"])
                    self.assertGreater(first["receivers"], 0, where)
                    self.assertGreater(first["expected_deliveries"], 0, where)
                    self.assertEqual(first["short_receivers"], 0, where)
                    self.assertEqual(first["over_receivers"], 0, where)
                    self.assertEqual(first["content_errors"], 0, where)
                    self.assertEqual(first["closed_connections"], 0, where)
                    self.assertEqual(first["delivered"], first["expected_deliveries"], where)
                    self.assertGreater(first["sampled_receivers"], 0, where)

    def test_report_lists_the_shapes(self) -> None:
        """The Markdown report renders a section per shape."""
        for title in ("few loud senders", "everyone talks", "many rooms", "over UDP",
                      "WebSocket users, deliveries/s"):
            self.assertIn(title, self.report)
