"""The chaos suite: real pods, real faults (kills, freezes, partitions, PostgreSQL restarts), and
the whole history checked against the scheduler's guarantees.

``python -m pytest chaos`` runs the short profile; ``python -m chaos --minutes 30`` a long one.
See docs/chaos.md.
"""
