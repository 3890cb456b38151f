"""OHIF under /viewer/: its configuration, its pages (one SPA) and its files."""

from django.urls import path, re_path

from . import views

app_name = "viewer"
urlpatterns = [
    path("app-config.js", views.app_config, name="app_config"),
    path("", views.page, {"path": ""}, name="index"),
    # OHIF's viewer route; the study list links here with ?StudyInstanceUIDs=<uid>.
    path("viewer", views.page, {"path": "viewer"}, name="study"),
    re_path(r"^(?P<path>.+)$", views.page, name="file"),
]
