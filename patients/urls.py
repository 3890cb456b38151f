from django.urls import path

from . import views

app_name = "patients"
urlpatterns = [
    path("", views.patient_login, name="login"),
    path("exams/", views.exam_list, name="exams"),
    path("exams/<str:study_uid>/", views.exam_detail, name="exam_detail"),
    path("exams/<str:study_uid>/report/", views.exam_report, name="exam_report"),
    path("exams/<str:study_uid>/report.pdf", views.exam_report_pdf, name="exam_report_pdf"),
    path("exams/<str:study_uid>/images/<str:sop_uid>/<int:frame>.jpg", views.frame_image,
         name="frame_image"),
]
