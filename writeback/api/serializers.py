"""API shapes. Serializers only shape data; services decide."""

from rest_framework import serializers

from writeback.models import AuditEntry, BusinessEvent, Consent, Write, WriteAttempt


class WriteSummarySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uid")
    tenant = serializers.CharField(source="tenant.slug")
    event = serializers.UUIDField(source="event.uid")

    class Meta:
        model = Write
        fields = [
            "id",
            "tenant",
            "event",
            "resource_type",
            "operation",
            "state",
            "risk",
            "attempts",
            "next_attempt_at",
            "patient_ref",
            "target_resource_id",
            "target_version",
            "last_outcome",
            "correlation_id",
            "created_at",
            "state_changed_at",
        ]


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WriteAttempt
        fields = [
            "number",
            "worker_id",
            "request_id",
            "correlation_id",
            "method",
            "url",
            "request_headers",
            "request_body_hash",
            "response_status",
            "response_body",
            "latency_ms",
            "outcome",
            "error",
            "started_at",
        ]


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "seq",
            "at",
            "actor",
            "action",
            "tenant",
            "object_type",
            "object_id",
            "event_uid",
            "write_uid",
            "correlation_id",
            "request_id",
            "target_ack",
            "data",
            "prev_hash",
            "hash",
        ]


class WriteDetailSerializer(WriteSummarySerializer):
    attempts_log = AttemptSerializer(many=True, read_only=True)
    audit = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta(WriteSummarySerializer.Meta):
        fields = [
            *WriteSummarySerializer.Meta.fields,
            "payload",
            "payload_hash",
            "base_version",
            "max_attempts",
            "last_error",
            "guarantee",
            "phase",
            "readback_diff",
            "warnings",
            "preview",
            "divergence",
            "approval_required",
            "contract_version",
            "payload_purged_at",
            "attempts_log",
            "audit",
            "links",
        ]

    def get_audit(self, write: Write) -> list[dict]:
        entries = AuditEntry.objects.filter(write_uid=str(write.uid)).order_by("seq")
        return AuditEntrySerializer(entries, many=True).data

    def get_links(self, write: Write) -> dict:
        def uid(obj):
            return str(obj.uid) if obj else None

        return {
            "supersedes": uid(write.supersedes),
            "compensates": uid(write.compensates),
            "replay_of": uid(write.replay_of),
        }


class EventSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uid")
    tenant = serializers.CharField(source="tenant.slug")
    writes = serializers.SerializerMethodField()

    class Meta:
        model = BusinessEvent
        fields = [
            "id",
            "tenant",
            "type",
            "kind",
            "idempotency_key",
            "source_system",
            "source_message_id",
            "content_hash",
            "canonical_payload",
            "patient_ref",
            "encounter_ref",
            "initiator_name",
            "acting_system",
            "origin_device",
            "consent_snapshot",
            "correlation_id",
            "occurred_at",
            "received_at",
            "writes",
        ]

    def get_writes(self, event: BusinessEvent) -> list[dict]:
        return [
            {
                "id": str(w.uid),
                "resource_type": w.resource_type,
                "operation": w.operation,
                "state": w.state,
                "risk": w.risk,
            }
            for w in event.writes.order_by("position", "id")
        ]


class _TextOnly:
    """A JSON string and nothing else: a number, a boolean or a list is the wrong type, not text to
    coerce (DRF's CharField would store 123 as "123")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Text(_TextOnly, serializers.CharField):
    pass


class Slug(_TextOnly, serializers.SlugField):
    pass


class Choice(_TextOnly, serializers.ChoiceField):
    default_error_messages = {"invalid": "Not a valid string."}


class Boolean(serializers.BooleanField):
    """true or false; DRF's BooleanField would also take "yes", "on", 1 and "0"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class JSONObject(serializers.JSONField):
    default_error_messages = {"not-object": "Must be a JSON object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not-object")
        return super().to_internal_value(data)


class RationaleSerializer(serializers.Serializer):
    rationale = Text(max_length=4000, trim_whitespace=True)


class NoteSerializer(serializers.Serializer):
    note = Text(max_length=4000, trim_whitespace=True)


class ReplaySerializer(serializers.Serializer):
    mode = Choice(choices=["resend", "rederive", "edit"], default="resend")
    payload = JSONObject(required=False)
    reason = Text(max_length=4000, required=False, allow_blank=True, default="")
    shadow = Boolean(default=False)


class EventReplaySerializer(serializers.Serializer):
    mode = Choice(choices=["resend", "rederive"], default="resend")
    reason = Text(max_length=4000, required=False, allow_blank=True, default="")
    shadow = Boolean(default=False)


class ReasonSerializer(serializers.Serializer):
    reason = Text(max_length=4000, trim_whitespace=True)


class CompensateSerializer(serializers.Serializer):
    kind = Choice(choices=["rollback", "correction"])
    reason = Text(max_length=4000, trim_whitespace=True)
    data = JSONObject(required=False)


class PeriodSerializer(serializers.Serializer):
    # Text, read by the consent service: a time without an offset, or none at all, is its 422.
    start = Text(required=False, allow_null=True, allow_blank=True, max_length=64)
    end = Text(required=False, allow_null=True, allow_blank=True, max_length=64)


class ScopeSerializer(serializers.Serializer):
    # Any words: the consent service refuses unknown ones (422) naming the allowed values.
    resource_types = serializers.ListField(child=Text(max_length=64), required=False, default=list)
    actions = serializers.ListField(child=Text(max_length=64), required=False, default=list)


class ConsentCreateSerializer(serializers.Serializer):
    tenant = Slug()
    patient = Text(max_length=128)
    scope = ScopeSerializer(required=False)
    period = PeriodSerializer(required=False)
    artifact = JSONObject(required=False)


class ConsentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uid")
    tenant = serializers.CharField(source="tenant.slug")
    patient = serializers.CharField(source="patient_ref")

    class Meta:
        model = Consent
        fields = [
            "id",
            "tenant",
            "patient",
            "resource_types",
            "actions",
            "status",
            "period_start",
            "period_end",
            "artifact_hash",
            "created_at",
            "revoked_at",
            "revoke_reason",
        ]


class RevokeSerializer(serializers.Serializer):
    reason = Text(max_length=4000, required=False, allow_blank=True, default="")
