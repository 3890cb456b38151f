from django.urls import path

from . import views

app_name = "sharing"
urlpatterns = [
    path("sharing/", views.overview, name="overview"),
    path("sharing/links/new/", views.link_new, name="link_new"),
    path("sharing/links/<int:pk>/revoke/", views.link_revoke, name="link_revoke"),
    path("sharing/shares/new/", views.share_new, name="share_new"),
    path("sharing/shares/<int:pk>/revoke/", views.share_revoke, name="share_revoke"),
    path("s/<str:token>", views.public_link, name="public_link"),
    path("s/<str:token>/download", views.public_download, name="public_download"),
    path("v/<str:token>", views.share_view, name="share_view"),
    path("v/<str:token>/images/<str:sop_uid>.jpg", views.share_image, name="share_image"),
    path("v/<str:token>/download", views.share_download, name="share_download"),
]
