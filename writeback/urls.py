from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from writeback.api.metrics import PrometheusMetricsApi

urlpatterns = [
    path("api/v1/", include("writeback.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("admin/", admin.site.urls),
    path("metrics", PrometheusMetricsApi.as_view(), name="metrics"),
    path("", include("console.urls")),
]

# A database outage that surfaces in a middleware (session, user) answers 503, not 500.
handler500 = "writeback.middleware_db.server_error"
