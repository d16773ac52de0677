"""Minimal settings for the Django recipe.

Django's own database is not used here (``DATABASES`` is empty: no models). The jobs live in
the PostgreSQL at ``$DATABASE_URL``, reached by pg-scheduler through asyncpg, not through
Django's connection; a project with models keeps its ``DATABASES`` as usual, and may point both
at the same server.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "recipe-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, Any] = {}
USE_TZ = True  # timezone.now() is aware, as schedule() requires

# Read once at startup, so a process without it fails at once rather than at its first job.
PG_SCHEDULER_DATABASE_URL = os.environ["DATABASE_URL"]

# Used by the jobs, in the pods: they run with these settings too.
DEFAULT_FROM_EMAIL = os.environ.get("SHOP_FROM_EMAIL", "Shop <shop@example.com>")
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
