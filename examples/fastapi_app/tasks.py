"""The jobs of the FastAPI recipe: the only module the pods import.

    DATABASE_URL=postgresql://... pg-scheduler run examples.fastapi_app.tasks

The web app imports it too, to schedule by function rather than by name: both processes
register ``fulfil_order`` under the same name, ``examples.fastapi_app.tasks:fulfil_order``,
because both import it as this module (run both from the same folder, here the repository's).
Keep this module light: every worker process imports it, and none of them needs the web app.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pg_scheduler import current_job, job


@job
async def fulfil_order(order_id: int, item: str, quantity: int) -> dict[str, Any]:
    """Ship an order. What it returns is stored as the job's result (JSON)."""
    await asyncio.sleep(0.1)  # stands in for calling the warehouse's API
    return {
        "order_id": order_id,
        "shipped": f"{quantity} x {item}",
        "tracking": f"TRK-{order_id:06d}",
        "attempt": current_job().attempt,
    }
