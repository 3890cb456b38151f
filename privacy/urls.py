from django.urls import path

from . import views

app_name = "privacy"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("consents/give/", views.consent_give, name="consent_give"),
    path("consents/<int:pk>/revoke/", views.consent_revoke, name="consent_revoke"),
    path("exports/", views.export_request, name="export_request"),
    path("exports/<int:pk>/", views.export_detail, name="export_detail"),
    path("exports/<int:pk>/link/", views.export_link, name="export_link"),
    path("download/<str:token>/", views.export_download, name="export_download"),
]
