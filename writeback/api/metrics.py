"""GET /api/v1/metrics (JSON) and GET /metrics (Prometheus text): the dashboard's numbers, scoped to the
tenants the caller (session or API token) may see, with the API's authentication rules."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from writeback.selectors import tenants_visible_to
from writeback.services.metrics import dashboard, prometheus_text


def _token(request: Request):
    from writeback.models import ApiToken

    return request.auth if isinstance(request.auth, ApiToken) else None


def _hours(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("hours", 24)), 1), 24 * 7)
    except ValueError:
        return 24


class PrometheusRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if isinstance(data, str):
            return data.encode()
        # Errors (401, 403) arrive as dicts: say them plainly.
        return (str(data.get("detail", data) if isinstance(data, dict) else data) + "\n").encode()


_HOURS = OpenApiParameter("hours", int, description="Window in hours (1 to 168, default 24).")


class MetricsApi(APIView):
    @extend_schema(
        parameters=[_HOURS], responses={200: OpenApiTypes.OBJECT}, summary="Dashboard metrics (JSON)"
    )
    def get(self, request: Request) -> Response:
        board = dashboard(tenants_visible_to(request.user, _token(request)), hours=_hours(request))
        return Response(board.as_json())


class PrometheusMetricsApi(APIView):
    renderer_classes = [PrometheusRenderer]

    @extend_schema(
        parameters=[_HOURS], responses={(200, "text/plain"): OpenApiTypes.STR}, summary="Prometheus metrics"
    )
    def get(self, request: Request) -> Response:
        board = dashboard(tenants_visible_to(request.user, _token(request)), hours=_hours(request))
        return Response(prometheus_text(board), content_type="text/plain; version=0.0.4; charset=utf-8")
