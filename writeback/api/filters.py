"""The API's ledger filters: the shared WriteFilter, stricter about times than the console's form."""

import django_filters
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters.fields import IsoDateTimeField

from writeback.filters import WriteFilter


class OffsetDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time that carries its offset: a time without one would be read in the server's
    zone, which is a guess."""

    def to_python(self, value):
        if value not in self.empty_values:
            try:
                parsed = parse_datetime(str(value).strip())
            except ValueError:
                parsed = None
            if parsed is not None and timezone.is_naive(parsed):
                raise ValidationError(
                    "give the time with an offset, e.g. 2026-11-20T14:00:00-05:00 or 2026-11-20T19:00:00Z",
                    code="missing-offset",
                )
        return super().to_python(value)


class OffsetDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = OffsetDateTimeField


class ApiWriteFilter(WriteFilter):
    since = OffsetDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = OffsetDateTimeFilter(field_name="created_at", lookup_expr="lt")
