from django.http import HttpRequest
from django.utils import timezone

ROLE_NAMES = {
    "clinician": "Clinician",
    "admin": "Admin",
    "integration_engineer": "Integration engineer",
    "auditor": "Auditor",
}


def operator(request: HttpRequest) -> dict:
    """The signed-in operator's roles, tenant scope and time zone, for the header of every page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from writeback.services.permissions import roles_of
    from writeback.services.tenants import tenants_for_user

    roles = sorted(roles_of(user))

    def scope() -> list[str]:
        return list(tenants_for_user(user).order_by("slug").values_list("slug", flat=True))

    chosen = getattr(request, "operator_tz", None)
    return {
        "operator_roles": roles,
        "operator_role_names": [ROLE_NAMES.get(r, r) for r in roles],
        # Evaluated only by the templates that show it (one query).
        "operator_tenants": scope,
        "operator_all_tenants": user.is_superuser,
        "operator_tz": chosen or timezone.get_current_timezone_name(),
        # No zone stored yet: the page asks the browser for one (console.js), if the person may use it.
        "operator_tz_unset": chosen is None and (bool(roles) or user.is_superuser),
    }
