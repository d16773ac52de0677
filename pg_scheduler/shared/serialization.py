"""Job arguments travel as JSON, never pickle: a row can carry data, not code.

Encoding goes through orjson where its answer is the standard library's (it is several times
faster, and ``schedule_bulk`` encodes a payload per row); ``json`` decides every other case.
orjson refuses what it would encode differently (datetimes, dataclasses, subclasses of
str/int/dict/list, ints beyond 64 bits, non-string keys) and turns NaN and infinities into
``null``: such payloads, and any with a ``null``, go through ``json``, which encodes them or
raises. One difference is kept: a ``uuid.UUID`` or an ``enum.Enum`` member is encoded as its JSON
value (a string, the member's value) where ``json`` refused it.

Decoding stays with ``json``: orjson reads an integer beyond 64 bits as a float, and telling
such text apart first costs what orjson saves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .errors import SerializationError

# One encoder for every job: json.dumps with options builds a new encoder per call, a cost
# schedule_bulk would pay per row. allow_nan=False: PostgreSQL's jsonb refuses NaN/Infinity, so
# refuse them here, early.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def encode_task_data(args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> str:
    """Return the ``task_data`` JSON text, or raise before anything is written."""
    # The exact-type checks are the fast path; the ABC checks (slow) only run for other types.
    if type(args) not in (tuple, list) and (isinstance(args, (str, bytes)) or not isinstance(args, Sequence)):
        raise SerializationError(f"args must be a tuple or list, not {type(args).__name__}")
    if kwargs is not None and type(kwargs) is not dict and not isinstance(kwargs, Mapping):
        raise SerializationError(f"kwargs must be a dict, not {type(kwargs).__name__}")
    # Both encoders write a tuple as an array: only other sequences and mappings are copied.
    payload = {
        "args": args if type(args) in (tuple, list) else list(args),
        "kwargs": kwargs if type(kwargs) is dict else dict(kwargs) if kwargs else {},
    }
    try:
        # Without a ``default``, orjson raises (a TypeError) for everything it refuses.
        fast = orjson.dumps(payload, option=_ORJSON_OPTIONS)
        if b"null" not in fast:  # NaN and infinities come out as null
            return fast.decode()
    except TypeError:
        pass  # json says whether, and how, it encodes this
    try:
        return _ENCODER.encode(payload)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"job arguments must be JSON-serialisable: {exc}") from exc


_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def decode_task_data(raw: str | bytes | Mapping[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` of a ``task_data`` value (JSON text or decoded); empty for None."""
    if raw is None:
        return [], {}
    data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    return list(data.get("args", [])), dict(data.get("kwargs", {}))


_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""An escaped NUL in JSON text: ``\\u0000`` after an even number of backslashes (an odd number
escapes the backslash of a literal ``\\u0000`` in a string)."""


def encode_result(value: Any) -> str:
    """A job's return value as JSON text (strict: no NaN, no infinities), or raise
    :class:`SerializationError` saying why it is not JSON."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"the job's return value is not JSON: {exc!s:.200}") from exc
    if _NUL.search(text):  # PostgreSQL's jsonb refuses the NUL character
        raise SerializationError(
            "the job's return value holds a NUL character (\\u0000), which jsonb refuses"
        )
    return text
