"""``python -m pg_scheduler`` is the ``pg-scheduler`` command."""

from .cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module too: do nothing then
    main(prog_name="pg-scheduler")
