"""Ledger filters shared by the API (`GET /api/v1/writes`) and the console's write list."""

import django_filters

from writeback.models import Risk, Write
from writeback.selectors import write_search
from writeback.states import WriteState


class WriteFilter(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    # distinct=False: a column of the write itself never repeats a row, and DISTINCT over every column
    # would sort the whole match instead of reading an index newest first.
    state = django_filters.MultipleChoiceFilter(choices=WriteState.choices, distinct=False)
    resource_type = django_filters.CharFilter()
    patient = django_filters.CharFilter(field_name="patient_ref")
    risk = django_filters.MultipleChoiceFilter(choices=Risk.choices, distinct=False)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    q = django_filters.CharFilter(method="search", label="Search ids and clinical keys")

    class Meta:
        model = Write
        fields = ["tenant", "state", "resource_type", "patient", "risk", "since", "until", "q"]

    def search(self, queryset, name, value):
        return write_search(queryset, value)
