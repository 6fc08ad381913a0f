"""The REST API (spec/events.md). Views parse, call one service, and shape the answer."""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from writeback import logcontext
from writeback.api import body
from writeback.api import serializers as s
from writeback.api.errors import ApiError
from writeback.api.filters import ApiWriteFilter
from writeback.models import BusinessEvent, Consent, Tenant, Write
from writeback.selectors import events_visible_to, scoped_get, tenants_visible_to, writes_visible_to
from writeback.services import approvals, compensation, consents, intake, operations, replay, two_phase
from writeback.services.permissions import refuse, require
from writeback.services.tokens import token_may_access

# One id per request, the same in logs, audit entries and the console (writeback/logcontext.py).
request_id = logcontext.request_id
correlation_id = logcontext.correlation_id


def _token(request: Request):
    from writeback.models import ApiToken

    return request.auth if isinstance(request.auth, ApiToken) else None


class EventCreateApi(APIView):
    """POST /api/v1/events: a business event in; 201, 200 (duplicate) or a 4xx OperationOutcome out.
    The request gate (writeback/api/body.py) has checked its size, JSON and characters."""

    body_kind = body.EVENTS

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={201: dict, 200: dict},
        parameters=[
            OpenApiParameter("dry_run", bool, description="validate and transform only; store nothing"),
            OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER, required=False),
        ],
    )
    def post(self, request: Request) -> Response:
        event = request.data
        if not isinstance(event, dict):
            raise ApiError(400, "invalid-envelope", "the event must be a JSON object")
        req = intake.IntakeRequest(
            body=event,
            user=request.user,
            token=_token(request),
            header_idempotency_key=request.headers.get("Idempotency-Key"),
            dry_run=request.query_params.get("dry_run", "").lower() in ("1", "true", "yes"),
            request_id=request_id(request),
            correlation_id=correlation_id(request),
        )
        result = intake.event_ingest(req)
        return Response(result.body, status=result.status)


def _scoped_get(request: Request, visible, model, uid, object_type: str, action: str = "view"):
    """The object if the caller may see it; 404 if it does not exist; 403 (audited) if it belongs to a
    tenant this token may not act on, or the caller holds no role that may `action`."""
    obj = scoped_get(
        request.user,
        visible,
        model.objects.select_related("tenant"),
        object_type,
        action=action,
        request_id=request_id(request),
        uid=uid,
    )
    require(
        request.user,
        action,
        obj.tenant,
        object_type=object_type,
        object_id=str(uid),
        request_id=request_id(request),
    )
    return obj


class EventDetailApi(RetrieveAPIView):
    serializer_class = s.EventSerializer
    queryset = BusinessEvent.objects.none()

    def get_object(self):
        visible = events_visible_to(self.request.user, _token(self.request))
        return _scoped_get(self.request, visible, BusinessEvent, self.kwargs["uid"], "event")


class LedgerPagination(CursorPagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    ordering = "-id"


class WriteListApi(ListAPIView):
    serializer_class = s.WriteSummarySerializer
    pagination_class = LedgerPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = ApiWriteFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Write.objects.none()
        token = _token(self.request)
        require(self.request.user, "view", None, object_type="write", request_id=request_id(self.request))
        slug = self.request.query_params.get("tenant")
        if slug:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is not None and not token_may_access(token, self.request.user, tenant):
                refuse(
                    self.request.user,
                    "view",
                    f"this token may not act on tenant {slug}",
                    rule="tenant-forbidden",
                    tenant=tenant,
                    request_id=request_id(self.request),
                )
        return writes_visible_to(self.request.user, token)


class WriteDetailApi(RetrieveAPIView):
    serializer_class = s.WriteDetailSerializer
    queryset = Write.objects.none()

    def get_object(self):
        visible = (
            writes_visible_to(self.request.user, _token(self.request))
            .select_related("supersedes", "compensates", "replay_of")
            .prefetch_related("attempts_log")
        )
        return _scoped_get(self.request, visible, Write, self.kwargs["uid"], "write")


def _write_for(request: Request, uid) -> Write:
    """A write the caller may act on: 404 when there is none, 403 (audited) when it is another tenant's."""
    return _scoped_get(request, writes_visible_to(request.user, _token(request)), Write, uid, "write")


class WriteApproveApi(APIView):
    @extend_schema(request=s.RationaleSerializer, responses=s.WriteSummarySerializer)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.RationaleSerializer, request)
        write = _write_for(request, uid)
        approvals.write_approve(
            write=write, user=request.user, rationale=data["rationale"], request_id=request_id(request)
        )
        return _write_answer(write)


class WriteRejectApi(APIView):
    @extend_schema(request=s.RationaleSerializer, responses=s.WriteSummarySerializer)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.RationaleSerializer, request)
        write = _write_for(request, uid)
        approvals.write_reject(
            write=write, user=request.user, rationale=data["rationale"], request_id=request_id(request)
        )
        return _write_answer(write)


class WriteReplayApi(APIView):
    @extend_schema(request=s.ReplaySerializer, responses=s.WriteSummarySerializer)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.ReplaySerializer, request)
        write = _write_for(request, uid)
        new = replay.write_replay(
            write=write,
            user=request.user,
            mode=data["mode"],
            payload=data.get("payload"),
            reason=data["reason"],
            shadow=data["shadow"],
            request_id=request_id(request),
        )
        return _write_answer(new, status.HTTP_202_ACCEPTED)


class EventReplayApi(APIView):
    """Re-runs an event's pipeline: its failed writes replayed, what is in the chart left alone."""

    @extend_schema(request=s.EventReplaySerializer, responses=dict)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.EventReplaySerializer, request)
        visible = events_visible_to(request.user, _token(request))
        event = _scoped_get(request, visible, BusinessEvent, uid, "event")
        rows = replay.event_replay(
            event=event,
            user=request.user,
            mode=data["mode"],
            reason=data["reason"],
            shadow=data["shadow"],
            request_id=request_id(request),
        )
        return Response({"event": str(event.uid), "writes": rows}, status=status.HTTP_202_ACCEPTED)


class WriteAbortApi(APIView):
    """A two-phase write's internal side failed: undo (or stop) its EHR side."""

    @extend_schema(request=s.ReasonSerializer, responses=dict)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.ReasonSerializer, request)
        write = _write_for(request, uid)
        done = two_phase.two_phase_abort(
            write=write, user=request.user, reason=data["reason"], request_id=request_id(request)
        )
        return Response({"write": str(write.uid), **done}, status=status.HTTP_202_ACCEPTED)


class WriteCompensateApi(APIView):
    @extend_schema(request=s.CompensateSerializer, responses=dict)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.CompensateSerializer, request)
        write = _write_for(request, uid)
        comp = compensation.write_compensate(
            write=write,
            user=request.user,
            kind=data["kind"],
            reason=data["reason"],
            data=data.get("data"),
            request_id=request_id(request),
        )
        body = {
            "id": str(comp.uid),
            "kind": comp.kind,
            "status": comp.status,
            "original_write": str(write.uid),
            "writes": [
                {"id": str(w.uid), "state": w.state, "resource_type": w.resource_type}
                for w in comp.writes.all()
            ],
            "manual_tasks": [
                {"id": str(t.uid), "role": t.role, "title": t.title, "instructions": t.instructions}
                for t in comp.manual_tasks.all()
            ],
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


class WriteResolveApi(APIView):
    @extend_schema(request=s.NoteSerializer, responses=s.WriteSummarySerializer)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.NoteSerializer, request)
        write = _write_for(request, uid)
        operations.write_resolve(
            write=write, user=request.user, note=data["note"], request_id=request_id(request)
        )
        return _write_answer(write)


class ConsentCreateApi(APIView):
    @extend_schema(request=s.ConsentCreateSerializer, responses={201: s.ConsentSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(s.ConsentCreateSerializer, request)
        tenant = Tenant.objects.filter(slug=data["tenant"]).first()
        if tenant is None:
            raise ApiError(422, "unknown-tenant", f"no tenant {data['tenant']!r}", "tenant")
        if not token_may_access(_token(request), request.user, tenant):
            refuse(
                request.user,
                "manage_consent",
                f"this token may not act on tenant {tenant.slug}",
                rule="tenant-forbidden",
                tenant=tenant,
                request_id=request_id(request),
            )
        scope, period = data.get("scope") or {}, data.get("period") or {}
        consent = consents.consent_create(
            tenant=tenant,
            patient_ref=data["patient"],
            actor=request.user,
            resource_types=scope.get("resource_types"),
            actions=scope.get("actions"),
            period_start=period.get("start"),
            period_end=period.get("end"),
            artifact=data.get("artifact"),
            request_id=request_id(request),
        )
        return Response(s.ConsentSerializer(consent).data, status=status.HTTP_201_CREATED)


class ConsentRevokeApi(APIView):
    @extend_schema(request=s.RevokeSerializer, responses=s.ConsentSerializer)
    def post(self, request: Request, uid) -> Response:
        data = _valid(s.RevokeSerializer, request)
        visible = Consent.objects.select_related("tenant").filter(
            tenant__in=tenants_visible_to(request.user, _token(request))
        )
        consent = _scoped_get(request, visible, Consent, uid, "consent", action="manage_consent")
        consent = consents.consent_revoke(
            consent=consent, actor=request.user, reason=data["reason"], request_id=request_id(request)
        )
        return Response(s.ConsentSerializer(consent).data)


def _valid(serializer_class, request: Request) -> dict:
    # No body at all is an empty object (a replay with its defaults); a body that is not one is refused.
    if not isinstance(request.data, dict):
        raise ApiError(400, "invalid-body", "the body must be a JSON object")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _write_answer(write: Write, code: int = status.HTTP_200_OK) -> Response:
    write.refresh_from_db()
    return Response(s.WriteSummarySerializer(write).data, status=code)
