"""Django recipe: sync views enqueue through ``SyncScheduler``; ``pg-scheduler run`` pods, with
the same Django settings, run the jobs. See docs/recipes.md."""
