"""DICOMweb (PS3.18) under one base URL. GET and POST on the same resource are one route;
``views`` sends each method to the module that implements it (qido, stow, wado)."""

from django.urls import path

from . import views

app_name = "dicomweb"

UID = "<str:study>"
urlpatterns = [
    path("studies", views.studies, name="studies"),
    path("series", views.all_series, name="series"),
    path("instances", views.all_instances, name="instances"),
    path(f"studies/{UID}", views.study, name="study"),
    path(f"studies/{UID}/metadata", views.study_metadata, name="study-metadata"),
    path(f"studies/{UID}/rendered", views.study_rendered, name="study-rendered"),
    path(f"studies/{UID}/thumbnail", views.study_thumbnail, name="study-thumbnail"),
    path(f"studies/{UID}/series", views.study_series, name="study-series"),
    path(f"studies/{UID}/instances", views.study_instances, name="study-instances"),
    path(f"studies/{UID}/series/<str:series>", views.series, name="series-retrieve"),
    path(f"studies/{UID}/series/<str:series>/metadata", views.series_metadata,
         name="series-metadata"),
    path(f"studies/{UID}/series/<str:series>/rendered", views.series_rendered,
         name="series-rendered"),
    path(f"studies/{UID}/series/<str:series>/thumbnail", views.series_thumbnail,
         name="series-thumbnail"),
    path(f"studies/{UID}/series/<str:series>/instances", views.series_instances,
         name="series-instances"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>", views.instance,
         name="instance"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/metadata",
         views.instance_metadata, name="instance-metadata"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/rendered",
         views.instance_rendered, name="instance-rendered"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/thumbnail",
         views.instance_thumbnail, name="instance-thumbnail"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/frames/<str:frames>",
         views.frames, name="frames"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/frames/<str:frames>"
         "/rendered", views.frames_rendered, name="frames-rendered"),
    path(f"studies/{UID}/series/<str:series>/instances/<str:instance>/bulkdata/<path:tag_path>",
         views.bulkdata, name="bulkdata"),
]
