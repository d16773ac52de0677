"""Leadership and pods: election, leader-only maintenance, and the worker process pool.

The pool serves ``pg-scheduler run``. Nothing here runs jobs."""
