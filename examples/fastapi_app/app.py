"""FastAPI recipe: the web process only enqueues; ``pg-scheduler run`` pods run the jobs.

    export DATABASE_URL=postgresql://...
    pg-scheduler run examples.fastapi_app.tasks          # the workers, one or more pods
    uvicorn examples.fastapi_app.app:app                 # the web app, from the same folder

    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"item": "book", "quantity": 2}'            # 201 {"order_id": 1, "job_id": ...}
    curl 'localhost:8000/jobs/order-1-fulfilment?wait=10'  # its status and result
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"item": "book", "quantity": 99}'           # 409: nothing written, no job

The lifespan opens one asyncpg pool for the app's own tables and the scheduler, and a Scheduler
that is never started: a producer, which writes jobs and reads them but runs none, so the web
process stays a web process (no worker, no leader election, no claims from request handlers).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from pg_scheduler import Job, JobNotFoundError, Scheduler

from .tasks import fulfil_order

# The app's own tables, created at startup to keep the recipe self-contained (a real app has
# migrations). They live in the same database as the jobs: that is what lets one transaction
# write both.
SCHEMA = """
CREATE TABLE IF NOT EXISTS inventory (
    item  text PRIMARY KEY,
    stock integer NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id   bigserial PRIMARY KEY,
    item       text NOT NULL REFERENCES inventory,
    quantity   integer NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO inventory (item, stock) VALUES ('book', 5), ('pen', 100) ON CONFLICT DO NOTHING;
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=10)
    try:
        await pool.execute(SCHEMA)
        app.state.pool = pool
        # Not started, not entered with `async with`: a producer. Its first use creates or
        # upgrades the scheduler's schema if no pod has yet.
        app.state.scheduler = Scheduler(pool)
        yield
    finally:
        await pool.close()


app = FastAPI(title="pg-scheduler FastAPI recipe", lifespan=lifespan)


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]


class OrderIn(BaseModel):
    item: str
    quantity: int = Field(gt=0)


class OrderOut(BaseModel):
    order_id: int
    job_id: str


class JobOut(BaseModel):
    job_id: str
    status: str
    result: Any = None
    error: str | None = None


@app.post("/orders", status_code=201)
async def create_order(order: OrderIn, pool: PoolDep, scheduler: SchedulerDep) -> OrderOut:
    # One transaction for the order, its job and the stock: all of it commits, or none. A job
    # scheduled with connection=conn exists only if this transaction commits, so a request that
    # fails after schedule() (here: not enough stock) leaves no job to ship an order that does
    # not exist, and a committed order always has its job (no "enqueue after commit" window
    # where a crash loses it).
    async with pool.acquire() as conn, conn.transaction():
        order_id: int = await conn.fetchval(
            "INSERT INTO orders (item, quantity) VALUES ($1, $2) RETURNING order_id",
            order.item,
            order.quantity,
        )
        # An id derived from the order: the order's job is found from the order alone, and a
        # second job for the same order is refused (JobAlreadyExistsError).
        job_id = await scheduler.schedule(
            fulfil_order,
            execution_time=datetime.now(UTC),
            kwargs={"order_id": order_id, "item": order.item, "quantity": order.quantity},
            job_id=f"order-{order_id}-fulfilment",
            max_retries=3,
            connection=conn,
        )
        left = await conn.fetchval(
            "UPDATE inventory SET stock = stock - $2 WHERE item = $1 AND stock >= $2 RETURNING stock",
            order.item,
            order.quantity,
        )
        if left is None:
            # Raised inside the transaction block: it rolls back the order and the job.
            raise HTTPException(409, f"not enough {order.item!r} in stock")
    return OrderOut(order_id=order_id, job_id=job_id)


@app.get("/jobs/{job_id}")
async def read_job(
    job_id: str,
    scheduler: SchedulerDep,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> JobOut:
    """The job as stored; with ``?wait=N``, once it has finished or after N seconds. A wait
    holds one pooled connection (woken by the job's notification, not by polling): keep N small
    and the pool big enough for the waits you allow."""
    found: Job | None
    if wait:
        try:
            found = await scheduler.wait_for(job_id, timeout=wait)
        except JobNotFoundError:
            found = None
        except TimeoutError:
            found = await scheduler.get_job(job_id)  # not finished yet: its state now
    else:
        found = await scheduler.get_job(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return JobOut(
        job_id=found.job_id,
        status=found.status.value,
        result=found.result,
        error=_first_line(found.error_message),
    )


def _first_line(error: str | None) -> str | None:
    """The error's first line: a traceback stays in the database, not in an HTTP reply."""
    return error.splitlines()[0] if error else None
