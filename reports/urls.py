from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    path("studies/<str:study_uid>/", views.editor, name="editor"),
    path("<int:pk>/pdf", views.report_pdf, name="pdf"),
]
