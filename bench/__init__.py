"""Benchmark harness for chatroom: servers side by side under the same load.

Run from the repository root with ``python -m bench.run`` (``--quick`` for a short run).
See ``bench/README.md`` for what each scenario measures.
"""
