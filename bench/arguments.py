"""Command-line helpers shared by ``python -m bench`` and its side scripts."""

from __future__ import annotations

import argparse
from collections.abc import Iterable


def split_choices(text: str, known: Iterable[str], p: argparse.ArgumentParser) -> list[str]:
    """A comma-separated list of names, each one of ``known``; exits through ``p.error`` naming
    the unknown ones and the choices otherwise."""
    choices = list(known)
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in choices]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})")
    return names
