"""The web dashboard: overview, jobs, one job, periodic jobs and queues, with their actions.

Install it with ``pip install 'pg-scheduler[dashboard]'`` (Starlette, Jinja2, uvicorn). Serve it
with ``pg-scheduler dashboard``, or mount :func:`create_app` in a Starlette or FastAPI app::

    from pg_scheduler.dashboard import create_app
    app.mount("/admin/jobs", create_app(pool, read_only=True))
"""

from __future__ import annotations

from .app import close_app, create_app
from .security import BasicAuth

__all__ = ["create_app", "close_app", "BasicAuth"]
