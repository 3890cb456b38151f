from django.urls import path

from . import rejection_views, views, workspace_views

app_name = "imaging"
urlpatterns = [
    path("", views.study_list, name="study_list"),
    path("upload/", views.upload, name="upload"),
    path("patients/<int:pk>/", workspace_views.patient_timeline, name="patient_timeline"),
    path("studies/<str:uid>/", workspace_views.study_detail, name="study_detail"),
    path("studies/<str:uid>/reject/", rejection_views.reject, name="study_reject"),
    path("studies/<str:uid>/instances/<str:sop>/header/", workspace_views.instance_header,
         name="instance_header"),
]
