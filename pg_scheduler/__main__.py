"""``python -m pg_scheduler`` is the ``pg-scheduler`` command."""

from .cli import main

main()
