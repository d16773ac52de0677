"""Leader election, the leader-only maintenance services, and (for ``pg-scheduler run``) the
worker process pool. Never runs jobs."""
