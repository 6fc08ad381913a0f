"""GET /api/v1/metrics (JSON: the dashboard's numbers) and GET /metrics (Prometheus text, see
writeback/metrics.py), both scoped to the tenants the caller (session or API token) may see, with the
API's authentication rules."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from writeback.metrics import exposition
from writeback.selectors import tenants_visible_to
from writeback.services.metrics import dashboard


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
        if isinstance(data, bytes | str):
            return data if isinstance(data, bytes) else data.encode()
        # Errors (401, 403) arrive as OperationOutcomes: one plain line per issue, as a scraper logs it.
        issues = data.get("issue", []) if isinstance(data, dict) else []
        lines = [str(i.get("diagnostics") or i.get("code") or "error") for i in issues if isinstance(i, dict)]
        return ("\n".join(lines or ["error"]) + "\n").encode()


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

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR}, summary="Prometheus metrics")
    def get(self, request: Request) -> Response:
        tenants = tenants_visible_to(request.user, _token(request)).values_list("pk", "slug")
        return Response(exposition(tenants), content_type=CONTENT_TYPE_PLAIN_0_0_4)
