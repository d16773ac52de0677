"""Values that can be used as they are, or awaited for the cluster's answer.

The 0.1 README calls the periodic management API without ``await``
(``scheduler.disable_periodic_job(key)``), yet the state it changes lives in the database and is
shared by the whole cluster. These types keep both forms working: used plainly they give the
local view at once (and a write is already on its way); awaited they give the database's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class AwaitableDict(dict[K, V]):
    """A dict of this process's view that, awaited, returns the whole cluster's view instead."""

    def __init__(self, local: dict[K, V], fetch: Callable[[], Awaitable[dict[K, V]]]) -> None:
        super().__init__(local)
        self._fetch = fetch

    def __await__(self) -> Generator[Any, None, dict[K, V]]:
        return self._fetch().__await__()


class AwaitableList(list[T]):
    """A list of this process's view that, awaited, returns the whole cluster's view instead."""

    def __init__(self, local: list[T], fetch: Callable[[], Awaitable[list[T]]]) -> None:
        super().__init__(local)
        self._fetch = fetch

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self._fetch().__await__()


class AwaitableOptional(Generic[T]):
    """An optional value (truthy when present) that can also be awaited."""

    def __init__(self, local: T | None, fetch: Callable[[], Awaitable[T | None]]) -> None:
        self.value = local
        self._fetch = fetch

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return bool(self.value == other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __getitem__(self, key: Any) -> Any:
        return self.value[key]  # type: ignore[index]

    def get(self, key: Any, default: Any = None) -> Any:
        """``dict.get`` on the local value when it is a dict, else ``default``."""
        return self.value.get(key, default) if isinstance(self.value, dict) else default

    def __repr__(self) -> str:
        return repr(self.value)

    def __await__(self) -> Generator[Any, None, T | None]:
        return self._fetch().__await__()
