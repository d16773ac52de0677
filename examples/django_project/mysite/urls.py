from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("signup", views.signup),
    path("jobs/<str:job_id>", views.job_status),
]
