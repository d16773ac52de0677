"""``python -m bench [options]``: build the harness's virtualenvs when missing (or pinned
differently), then run the harness inside ``bench/.venv``. ``--help`` lists the options."""

from __future__ import annotations

import os
import sys

from .environment import MAIN, ROOT, SEED_VENV, ensure, running_in_main_venv


def main() -> int:
    args = sys.argv[1:]
    if not running_in_main_venv():
        ensure(rebuild="--rebuild-venvs" in args)
        if "--setup-only" in args:
            return 0
        os.chdir(ROOT)  # `-m bench` and `tests.pgserver` are found from the repository root
        rest = [a for a in args if a != "--rebuild-venvs"]
        os.execv(MAIN.python, [str(MAIN.python), "-m", "bench", *rest])
    if not MAIN.up_to_date():
        print(
            "bench: bench/.venv is pinned differently; run `python -m bench --rebuild-venvs` "
            "with the Python outside it",
            file=sys.stderr,
        )
    if not SEED_VENV.up_to_date():
        SEED_VENV.build()
    if "--setup-only" in args:
        return 0
    from .cli import main as run

    return run([a for a in args if a != "--rebuild-venvs"])


if __name__ == "__main__":
    sys.exit(main())
