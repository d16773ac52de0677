"""The jobs of examples/script.py, run by a pod:

    DATABASE_URL=postgresql://... pg-scheduler run examples/script_tasks.py

``pg-scheduler run`` imports a file as a module named after it, ``script_tasks``, with its folder
on ``sys.path``: the script, beside it, imports it under the same name, so both processes know
the task as ``script_tasks:count_words``.
"""

from __future__ import annotations

from collections import Counter

from pg_scheduler import job


@job
def count_words(text: str) -> dict[str, object]:
    """A plain ``def`` (it runs in a thread of the worker); its return value is the result."""
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    words = [w for w in words if w]
    top, count = Counter(words).most_common(1)[0] if words else ("", 0)
    return {"words": len(words), "most_common": top, "times": count}
