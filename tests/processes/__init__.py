"""Tests with real OS processes: replicas, pods, the CLI and the examples run as subprocesses."""
