"""Baseline servers the benchmark compares chatroom against."""
