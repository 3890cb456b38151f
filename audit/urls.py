from django.urls import path

from . import views

app_name = "audit"
urlpatterns = [
    path("my-access/", views.my_access_history, name="my_access_history"),
]
