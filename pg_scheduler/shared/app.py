"""Loading the APP of ``pg-scheduler run APP``: the module that registers the tasks.

The supervisor imports it for the periodic definitions, and every worker process imports it for
the tasks. Both must see the same module name, because task names are ``module:qualname``:

- a module name (``myapp.tasks``) is imported with the current directory on ``sys.path``, as
  ``python -m`` would;
- a file (``path/tasks.py``) is imported as the module ``tasks`` with its folder on ``sys.path``,
  so a producer that does ``import tasks`` next to it schedules under the same names.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import AppLoadError


def is_file_app(app: str) -> bool:
    """Whether APP names a file (a ``.py`` name or a path) rather than a module."""
    return app.endswith(".py") or os.sep in app or (os.altsep is not None and os.altsep in app)


def load_app(app: str) -> ModuleType:
    """Import APP (a module name or a ``.py`` file) and return the module.

    :raises AppLoadError: with one line saying why (missing file or module, or what it raised).
    """
    app = app.strip()
    if not app:
        raise AppLoadError("APP is empty: give a module (myapp.tasks) or a file (path/tasks.py)")
    if is_file_app(app):
        path = Path(app).expanduser().resolve()
        if path.suffix != ".py" or not path.is_file():
            raise AppLoadError(f"APP {app!r}: no such Python file")
        _prepend_path(str(path.parent))
        module_name = path.stem
    else:
        _prepend_path(os.getcwd())
        module_name = app
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import APP {app!r}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if is_file_app(app):
        loaded = getattr(module, "__file__", None)
        if loaded is None or Path(loaded).resolve() != Path(app).expanduser().resolve():
            raise AppLoadError(
                f"APP {app!r}: the name {module_name!r} is taken by {loaded or 'a built-in'}; "
                f"rename the file or pass it as a module"
            )
    return module


def _prepend_path(entry: str) -> None:
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
