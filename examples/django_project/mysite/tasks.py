"""The jobs of the Django recipe, run by the pods with the project's settings:

    cd examples/django_project
    DJANGO_SETTINGS_MODULE=mysite.settings DATABASE_URL=postgresql://... \\
        pg-scheduler run mysite.tasks

``pg-scheduler run`` imports this module first in each process, so it sets Django up itself;
in the web process, where Django is already set up when a view imports it, it leaves it be.
The views import it from the same folder, so both register ``mysite.tasks:send_welcome_email``.
"""

from __future__ import annotations

import os

import django
from django.apps import apps
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import close_old_connections

from pg_scheduler import job

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
if not apps.ready:
    django.setup()


@job
def send_welcome_email(email: str) -> dict[str, str | int]:
    """A plain ``def``: it runs in a thread of the worker, where Django's sync APIs (the ORM
    included) work as in a view. Each thread has its own database connections, so close the
    stale ones around the job, as Django does around each request."""
    close_old_connections()
    try:
        message = EmailMessage(
            subject="Welcome to the shop",
            body="Thanks for signing up.",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[email],
        )
        sent = message.send()
        return {"to": email, "from": settings.DEFAULT_FROM_EMAIL, "sent": sent}
    finally:
        close_old_connections()
