"""FHIR's RESTful interactions that this server offers: capabilities, read and search."""

from django.urls import path, re_path

from . import views

app_name = "fhir"

urlpatterns = [
    path("metadata", views.metadata, name="metadata"),
    re_path(r"^(?P<resource_type>[A-Za-z]+)/?$", views.search, name="search"),
    re_path(r"^(?P<resource_type>[A-Za-z]+)/(?P<resource_id>[^/]+)/?$", views.read,
            name="read"),
]
