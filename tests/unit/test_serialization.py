"""Job arguments are encoded by orjson only where it agrees with ``json``: what a job may carry,
and what it receives, are those of the standard library (shared/serialization.py)."""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from pg_scheduler.shared.errors import SerializationError
from pg_scheduler.shared.serialization import _ENCODER, decode_task_data, encode_task_data


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Plain(enum.Enum):
    A = "a"


@dataclass
class Point:
    x: int


AGREED: list[tuple[str, tuple[Any, ...], dict[str, Any] | None]] = [
    ("numbers", (1, -2, 2.5, 1e300, 9_223_372_036_854_775_807), None),
    ("an int beyond 64 bits", (2**70,), None),
    ("None", (None, {"a": None}), None),
    ("text with null in it", ("nullable",), {"why": "null"}),
    ("non-string keys", ({1: "one", 2.5: "x", False: "f", None: "n"},), None),
    ("nested tuples", ((1, (2, 3)), {"t": (4,)}), None),
    ("str and int subclasses", (Name("n"), Colour.RED), {"k": Name("v")}),
    ("unicode", ("é – 😀", "\u0000"), None),
    ("a lone surrogate (json escapes it)", ("\ud800",), None),
    ("booleans", (True, False), {"flag": True}),
]


@pytest.mark.parametrize(("label", "args", "kwargs"), AGREED, ids=[a[0] for a in AGREED])
def test_what_json_encodes_is_encoded_to_the_same_value(
    label: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> None:
    text = encode_task_data(args, kwargs)
    expected = _ENCODER.encode({"args": list(args), "kwargs": kwargs or {}})
    assert json.loads(text) == json.loads(expected), label
    assert decode_task_data(text) == tuple(json.loads(expected).values()), label


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        datetime.now(UTC),
        Point(1),
        {1, 2},
        object(),
        b"bytes",
    ],
    ids=["nan", "inf", "-inf", "datetime", "dataclass", "set", "object", "bytes"],
)
def test_what_json_refuses_is_refused(value: Any) -> None:
    with pytest.raises(SerializationError):
        encode_task_data((value,), None)
    with pytest.raises(SerializationError):
        encode_task_data((), {"x": [value]})


def test_a_uuid_or_a_plain_enum_member_travels_as_its_json_value() -> None:
    """The one widening over json, which refused both: the job receives the string or value."""
    job_id = uuid.UUID(int=5)
    text = encode_task_data((job_id, Plain.A), None)
    assert decode_task_data(text) == ([str(job_id), "a"], {})
