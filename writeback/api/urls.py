from django.urls import path

from writeback.api import views
from writeback.api.metrics import MetricsApi

urlpatterns = [
    path("events", views.EventCreateApi.as_view(), name="api-events"),
    path("events/<uuid:uid>", views.EventDetailApi.as_view(), name="api-event"),
    path("events/<uuid:uid>/replay", views.EventReplayApi.as_view(), name="api-event-replay"),
    path("writes", views.WriteListApi.as_view(), name="api-writes"),
    path("writes/<uuid:uid>", views.WriteDetailApi.as_view(), name="api-write"),
    path("writes/<uuid:uid>/approve", views.WriteApproveApi.as_view(), name="api-write-approve"),
    path("writes/<uuid:uid>/reject", views.WriteRejectApi.as_view(), name="api-write-reject"),
    path("writes/<uuid:uid>/replay", views.WriteReplayApi.as_view(), name="api-write-replay"),
    path("writes/<uuid:uid>/compensate", views.WriteCompensateApi.as_view(), name="api-write-compensate"),
    path("writes/<uuid:uid>/resolve", views.WriteResolveApi.as_view(), name="api-write-resolve"),
    path("writes/<uuid:uid>/abort", views.WriteAbortApi.as_view(), name="api-write-abort"),
    path("consents", views.ConsentCreateApi.as_view(), name="api-consents"),
    path("consents/<uuid:uid>/revoke", views.ConsentRevokeApi.as_view(), name="api-consent-revoke"),
    path("metrics", MetricsApi.as_view(), name="api-metrics"),
]
