from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import two_factor
from accounts import views as accounts_views
from imaging import emergency

from . import navigation

urlpatterns = [
    path("", navigation.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("accounts.urls")),
    path("accounts/2fa/", two_factor.two_factor, name="two_factor"),
    path("accounts/enrol/<str:token>/", two_factor.enrol, name="enrol"),
    path("accounts/password-reset/", auth_views.PasswordResetView.as_view(),
         name="password_reset"),
    path("accounts/password-reset/sent/", auth_views.PasswordResetDoneView.as_view(),
         name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", accounts_views.PasswordResetConfirm.as_view(),
         name="password_reset_confirm"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("imaging/emergency/", emergency.break_the_glass, name="break_glass"),
    path("imaging/", include("imaging.urls")),
    path("orders/", include("orders.urls")),
    path("dicomweb/", include("dicomweb.urls")),
    path("fhir/", include("fhir_api.urls")),
    path("audit/", include("audit.urls")),
    path("privacy/", include("privacy.urls")),
    path("viewer/", include("viewer.urls")),
    path("patient/", include("patients.urls")),
    path("reports/", include("reports.urls")),
    path("", include("sharing.urls")),
]

# The database unreachable: 503 with Retry-After (portal/database_unavailable.py).
handler500 = "portal.database_unavailable.server_error"
