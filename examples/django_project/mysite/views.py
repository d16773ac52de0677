"""Sync views that enqueue jobs and read them through the blocking ``SyncScheduler``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pg_scheduler import Job, JobNotFoundError

from .scheduling import get_scheduler
from .tasks import send_welcome_email


@csrf_exempt  # an API for other programs; a form view keeps Django's CSRF check
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "").strip()
    if "@" not in email:
        return JsonResponse({"error": "a valid email is required"}, status=400)
    # Committed when schedule() returns: SyncScheduler writes through its own pool, outside
    # any transaction of Django's. A view that also writes models should schedule in
    # transaction.on_commit(...), so that a rolled-back request enqueues nothing.
    job_id = get_scheduler().schedule(
        send_welcome_email,
        execution_time=timezone.now(),
        kwargs={"email": email},
        max_retries=3,
    )
    return JsonResponse({"job_id": job_id}, status=202)


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    """The job as stored; with ``?wait=N`` (at most 30), once it finished or after N seconds.
    A wait blocks this request's thread and holds one of the scheduler's connections."""
    try:
        wait = min(max(float(request.GET.get("wait", "0")), 0.0), 30.0)
    except ValueError:
        return JsonResponse({"error": "wait must be a number of seconds"}, status=400)
    scheduler = get_scheduler()
    found: Job | None
    try:
        found = scheduler.wait_for(job_id, timeout=wait) if wait else scheduler.get_job(job_id)
    except JobNotFoundError:
        found = None
    except TimeoutError:
        found = scheduler.get_job(job_id)
    if found is None:
        return JsonResponse({"error": f"no job {job_id!r}"}, status=404)
    return JsonResponse(
        {
            "job_id": found.job_id,
            "status": found.status.value,
            "result": found.result,
            "error": (found.error_message or "").splitlines()[0] if found.error_message else None,
        }
    )
