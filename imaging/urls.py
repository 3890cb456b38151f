from django.urls import path

from . import views

app_name = "imaging"
urlpatterns = [
    path("", views.study_list, name="study_list"),
    path("upload/", views.upload, name="upload"),
]
