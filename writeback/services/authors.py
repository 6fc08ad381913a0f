"""Who the chart names as the author of what we write: people mapped to the EHR's Practitioners, per
tenant, and the tenant's policy for people without a mapping.

Engineers set mappings and the policy (the console's tenant page, `tenant_map_user`); every change is
audited with the value before and after, and the rows keep their history (django-simple-history).
"""

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from adapters.registry import adapter_class
from writeback.errors import DomainError
from writeback.models import AuditAction, PractitionerMapping, Tenant, UnmappedAuthor
from writeback.services import audit
from writeback.services.permissions import is_client_app
from writeback.services.tenants import require_configure, save_tenant_change
from writeback.validation.outcome import ValidationFailed, error

# A FHIR relative reference of one type: Type/id, the id as R4 defines it.
_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
PRACTITIONER_REF = re.compile(rf"^Practitioner/{_FHIR_ID}$")
ORGANIZATION_REF = re.compile(rf"^Organization/{_FHIR_ID}$")


# `author_for`'s default: look the user's mapping up (a caller may pass what it read already).
LOOK_UP = object()


def author_for(
    tenant: Tenant, user: AbstractBaseUser | None, practitioner_ref: Any = LOOK_UP
) -> dict[str, Any]:
    """The Reference every resource of an event initiated by `user` names as its author.

    The user's Practitioner at this tenant; without one, the tenant's Organization where its policy
    says so, or a 422 `practitioner-unmapped` (nothing stored). `practitioner_ref`: the mapping's
    reference (or None for no mapping) when the caller read it with the user, as intake does."""
    if practitioner_ref is LOOK_UP:
        mapping = (
            PractitionerMapping.objects.filter(tenant=tenant, user=user).first() if user is not None else None
        )
        practitioner_ref = mapping.practitioner_ref if mapping is not None else None
    if practitioner_ref and user is not None:
        return {"reference": practitioner_ref, "display": user.get_username()}
    name = user.get_username() if user is not None else "(nobody)"
    if tenant.unmapped_author == UnmappedAuthor.REFUSE:
        raise ValidationFailed(
            [
                error(
                    "practitioner-unmapped",
                    "initiator.user",
                    f"{name} has no Practitioner at {tenant.slug}, and the tenant refuses writes it "
                    "cannot attribute to a person; an engineer maps them with tenant_map_user",
                    code="business-rule",
                )
            ],
            status=422,
        )
    return organization_author(tenant)


def vendor_writes_provenance(vendor: str) -> bool:
    """Whether the vendor's adapter writes a Provenance at all (a tenant may then switch it on)."""
    return ("Provenance", "create") in adapter_class(vendor).capabilities().writes


def organization_author(tenant: Tenant) -> dict[str, Any]:
    """The tenant's Organization as a Reference; a display-only one where none is configured."""
    display = tenant.name or tenant.slug
    if tenant.organization_ref:
        return {"reference": tenant.organization_ref, "display": display}
    return {"type": "Organization", "display": display}


def practitioner_map(
    *, tenant: Tenant, username: str, practitioner_ref: str, actor: Any, reason: str = ""
) -> PractitionerMapping:
    """Maps `username` to `practitioner_ref` at `tenant` (creating or changing the mapping)."""
    require_configure(actor, tenant)
    practitioner_ref = practitioner_ref.strip()
    if not PRACTITIONER_REF.match(practitioner_ref):
        raise DomainError(
            422,
            "invalid-practitioner",
            f"{practitioner_ref[:80]!r} is not a Practitioner reference (Practitioner/ID)",
            "practitioner",
        )
    user = _person(username)
    with transaction.atomic():
        mapping = PractitionerMapping.objects.select_for_update().filter(tenant=tenant, user=user).first()
        before = mapping.practitioner_ref if mapping else None
        if before == practitioner_ref:
            return mapping
        mapping = mapping or PractitionerMapping(tenant=tenant, user=user)
        mapping.practitioner_ref = practitioner_ref
        mapping.set_by = actor if not isinstance(actor, str) else None
        mapping._change_reason = reason
        mapping.save()
        audit.record(
            AuditAction.PRACTITIONER_MAPPED,
            actor=actor,
            tenant=tenant.slug,
            object_type="user",
            object_id=user.get_username(),
            data={"before": before, "after": practitioner_ref, "reason": reason},
        )
    return mapping


def practitioner_unmap(*, tenant: Tenant, username: str, actor: Any, reason: str = "") -> bool:
    """Removes `username`'s mapping at `tenant` (history keeps it). False when there was none."""
    require_configure(actor, tenant)
    user = _person(username)
    with transaction.atomic():
        mapping = PractitionerMapping.objects.select_for_update().filter(tenant=tenant, user=user).first()
        if mapping is None:
            return False
        before = mapping.practitioner_ref
        mapping._change_reason = reason
        mapping.delete()
        audit.record(
            AuditAction.PRACTITIONER_UNMAPPED,
            actor=actor,
            tenant=tenant.slug,
            object_type="user",
            object_id=user.get_username(),
            data={"before": before, "after": None, "reason": reason},
        )
    return True


def tenant_set_author_policy(
    *,
    tenant: Tenant,
    unmapped_author: str,
    organization_ref: str,
    actor: Any,
    reason: str = "",
    write_provenance: bool | None = None,
) -> Tenant:
    """Sets what happens to an initiator without a Practitioner, the tenant's Organization, and
    whether each event gets a Provenance (only where the vendor's adapter writes one)."""
    require_configure(actor, tenant)
    write_provenance = tenant.write_provenance if write_provenance is None else write_provenance
    if write_provenance and not vendor_writes_provenance(tenant.vendor):
        raise DomainError(
            422,
            "provenance-not-supported",
            f"the {tenant.get_vendor_display()} adapter writes no Provenance (docs/vendors.md)",
            "write_provenance",
        )
    if unmapped_author not in UnmappedAuthor.values:
        raise DomainError(
            422,
            "invalid-value",
            f"unmapped_author must be one of {', '.join(UnmappedAuthor.values)}",
            "unmapped_author",
        )
    organization_ref = organization_ref.strip()
    if organization_ref and not ORGANIZATION_REF.match(organization_ref):
        raise DomainError(
            422,
            "invalid-organization",
            f"{organization_ref[:80]!r} is not an Organization reference (Organization/ID)",
            "organization_ref",
        )
    before = {
        "unmapped_author": tenant.unmapped_author,
        "organization_ref": tenant.organization_ref,
        "write_provenance": tenant.write_provenance,
    }
    after = {
        "unmapped_author": unmapped_author,
        "organization_ref": organization_ref,
        "write_provenance": write_provenance,
    }
    if before == after:
        return tenant
    return save_tenant_change(
        tenant,
        AuditAction.TENANT_AUTHOR_POLICY_CHANGED,
        after,
        actor=actor,
        reason=reason,
        data={"before": before, "after": after},
    )


def _person(username: str) -> AbstractBaseUser:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise DomainError(422, "unknown-user", f"no user {username[:150]!r}", "username")
    if is_client_app(user):
        # A service account is never the clinician responsible for a chart entry.
        raise DomainError(422, "not-a-person", f"{username} is a client app, not a person", "username")
    return user
