"""The task registry: which functions this process may run, under stable names.

A task is an ``async def`` (run as a coroutine on the worker's event loop) or a plain ``def``
(run in a thread of the worker, one per slot: worker/executor.py).

A job row names its task; a worker runs a row only if the name is in this registry, so nothing
named by the database is ever imported or called unless the running code registered it.

Names are ``module:qualname`` (``billing.jobs:send``), so two functions called ``send`` in two
modules stay apart, and every process that imports the module (``@job`` and ``@periodic``
register at import time) can run the task, not only the process that scheduled it.

A taken name stays with its definition. The same definition run again (a function of the same
module and qualified name, or from the same source line) replaces the earlier function: a
module reloaded, a notebook cell run twice, a test's local function defined anew in each test.
Any other function under a taken name (another module, another qualified name; an explicit
``name=`` included) raises :class:`TaskNameConflictError` instead of replacing it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .errors import NotACoroutineFunctionError, TaskNameConflictError, UnknownTaskError
from .queues import DEFAULT_QUEUE, check_queue
from .serialization import encode_task_data

TaskFunc = Callable[..., Coroutine[Any, Any, Any]] | Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

_TASK_ATTR = "__pg_scheduler_task__"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A registered task: its name and the function that runs it."""

    name: str
    func: TaskFunc
    explicit: bool
    """True when registered by ``@job``/``@periodic``/``register`` (importable everywhere), False
    when registered implicitly by ``schedule()`` of a function in this process only."""
    queue: str = DEFAULT_QUEUE
    """The queue of this task's jobs when ``schedule()`` names none."""
    is_async: bool = field(init=False)
    """True for an ``async def`` (awaited on the event loop), False for a plain function (run
    in a thread)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", is_async_function(self.func))


def is_async_function(func: Callable[..., Any]) -> bool:
    """An ``async def``, or an object whose ``__call__`` is one."""
    if inspect.isclass(func):  # calling it makes an instance, whatever its __call__ is
        return False
    call = getattr(func, "__call__", None)  # noqa: B004 (the method itself, not whether there is one)
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)


def default_task_name(func: Callable[..., Any]) -> str:
    """``module:qualname``, the name a task gets when none is given."""
    module = getattr(func, "__module__", None) or "<unknown>"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}:{qualname}"


def ensure_task_function(func: Callable[..., Any]) -> None:
    """Raise ``NotACoroutineFunctionError`` unless ``func`` can be a task: an ``async def``, or
    a plain function (a generator, an async generator, a class or a non-callable cannot)."""
    if is_async_function(func):
        return
    if (
        not callable(func)
        or inspect.isclass(func)
        or inspect.isgeneratorfunction(func)
        or inspect.isasyncgenfunction(func)
    ):
        name = getattr(func, "__qualname__", repr(func))
        # "Expected an async function": 0.2.3's words, which programs and tests match on.
        raise NotACoroutineFunctionError(
            f"Expected an async function or a plain function, got {name}: a task is an "
            f"'async def' (run as a coroutine) or a 'def' (run in a worker thread), not a "
            f"generator, a class or a value"
        )


class TaskRegistry:
    """Name -> function. Thread-safe because a supervisor may import apps from several threads."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def register(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        *,
        explicit: bool = True,
        queue: str | None = None,
    ) -> Task:
        """Register ``func`` under ``name`` (or its default name) and return the task.

        ``queue`` is the task's queue (default ``"default"``); registering the same function
        again with another queue moves the task there."""
        ensure_task_function(func)
        task_queue = DEFAULT_QUEUE if queue is None else check_queue(queue)
        task_name = name or getattr(func, _TASK_ATTR, None) or default_task_name(func)
        if not isinstance(task_name, str) or not task_name.strip():
            raise TaskNameConflictError(f"invalid task name {task_name!r}")
        with self._lock:
            existing = self._tasks.get(task_name)
            if existing is not None:
                if existing.func is func:
                    if queue is not None and queue != existing.queue:
                        existing = Task(task_name, func, existing.explicit or explicit, task_queue)
                        self._tasks[task_name] = existing
                    if explicit and not existing.explicit:
                        existing = Task(task_name, func, True, existing.queue)
                        self._tasks[task_name] = existing
                    return existing
                if not is_redefinition(existing.func, func):
                    raise TaskNameConflictError(
                        f"task name {task_name!r} is already registered for "
                        f"{default_task_name(existing.func)}; give one of them another name "
                        f"(@job(name=...))"
                    )
                log.debug("task %s defined again: the latest definition replaces the earlier one", task_name)
                explicit = explicit or existing.explicit
            task = Task(task_name, func, explicit, task_queue)
            self._tasks[task_name] = task
        try:
            setattr(func, _TASK_ATTR, task_name)
        except (AttributeError, TypeError):
            pass
        return task

    def get(self, name: str) -> Task:
        """The task under ``name``; ``UnknownTaskError`` when none is registered."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(f"no task registered under {name!r} in this process") from None

    def find(self, name: str) -> Task | None:
        """The task under ``name``, or ``None``."""
        return self._tasks.get(name)

    def queue_of(self, name: str) -> str:
        """The queue of the task under ``name``; ``"default"`` for a name not registered here
        (a task of another process, scheduled by name)."""
        task = self._tasks.get(name)
        return DEFAULT_QUEUE if task is None else task.queue

    def name_of(self, func: Callable[..., Any]) -> str | None:
        """The name under which this very function is registered, or ``None``."""
        name = getattr(func, _TASK_ATTR, None)
        if isinstance(name, str) and name in self._tasks and self._tasks[name].func is func:
            return name
        default = default_task_name(func)
        task = self._tasks.get(default)
        return default if task is not None and task.func is func else None

    def names(self) -> list[str]:
        """Every registered task name, sorted."""
        with self._lock:
            return sorted(self._tasks)

    def unregister(self, name: str) -> None:
        """Forget the task under ``name``, if any."""
        with self._lock:
            self._tasks.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


def is_redefinition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether ``b`` is the definition of ``a`` run again, not another function: the same module
    and qualified name (a reloaded module, a notebook cell run twice, a test's local function
    made anew by each test), or the same qualified name from the same source line (``python
    app.py`` whose module the app also imports as ``app``)."""
    qualname_a = getattr(a, "__qualname__", None)
    if qualname_a is None or qualname_a != getattr(b, "__qualname__", None):
        return False
    module_a = getattr(a, "__module__", None)
    if module_a is not None and module_a == getattr(b, "__module__", None):
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        code_a is not None
        and code_b is not None
        and code_a.co_filename == code_b.co_filename
        and code_a.co_firstlineno == code_b.co_firstlineno
    )


registry = TaskRegistry()
"""The process-wide registry that ``@job`` and ``@periodic`` fill at import time."""


@overload
def job(func: F, /) -> F: ...
@overload
def job(*, name: str | None = None, queue: str | None = None) -> Callable[[F], F]: ...
def job(
    func: F | None = None, /, *, name: str | None = None, queue: str | None = None
) -> F | Callable[[F], F]:
    """Register an ``async def`` as a task, so any process that imports its module can run it.

    ``@job`` names it ``module:qualname``; ``@job(name="emails.send")`` picks a name that
    survives moving the function. ``@job(queue="emails")`` puts its jobs in that queue unless
    ``schedule(..., queue=...)`` says otherwise (default ``"default"``). The function is
    returned unchanged.
    """
    if queue is not None:
        check_queue(queue)

    def decorate(f: F) -> F:
        registry.register(f, name, queue=queue)
        return f

    if func is not None:
        return decorate(func)
    return decorate


def deterministic_job_id(
    func: Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """A job id derived from the task and its arguments (the 0.1 README's "deterministic job
    ids"): the same call always gets the same id, so scheduling it twice with
    ``ConflictResolution.IGNORE`` runs it once.

    Arguments are hashed through their JSON form (keys sorted), the form the job row stores.
    """
    if isinstance(func, str):
        name = func
    else:
        name = registry.name_of(func) or default_task_name(func)
    canonical = json.dumps(json.loads(encode_task_data(args, kwargs)), sort_keys=True)
    digest = hashlib.sha256(f"{name}\x00{canonical}".encode()).hexdigest()[:32]
    return f"{name}:{digest}"
