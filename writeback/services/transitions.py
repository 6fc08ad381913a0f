"""The one function that changes a write's state, and writes the audit entry that says so; and the
guarded UPDATE of one ledger row that the worker's hot path runs for every write."""

from functools import lru_cache
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import connections, router, transaction
from django.db.models import Field
from django.utils import timezone

from writeback.models import AuditAction, Write
from writeback.services import audit
from writeback.states import InvalidTransition, check_transition


def transition(
    write: Write,
    to: str,
    *,
    actor: Any,
    reason: str = "",
    data: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    request_id: str = "",
    target_ack: bool | None = None,
    defer_audit: list[audit.AuditDraft] | None = None,
    guard: dict[str, Any] | None = None,
) -> Write:
    """Moves `write` to `to` if the table allows it and nobody moved it meanwhile.

    `guard` adds conditions the row must still meet (a worker passes its lease: a worker whose lease
    lapsed and was taken over must not record over the new holder).

    `fields` are other columns changed in the same UPDATE. The audit entry is appended at once, or to
    `defer_audit` when the caller appends several entries at the end of its transaction (one chain lock).
    """
    current = write.state
    check_transition(current, to)
    now = timezone.now()
    updates = {"state": to, "state_changed_at": now, "updated_at": now, **(fields or {})}
    with transaction.atomic(savepoint=False):
        changed = Write.objects.filter(pk=write.pk, state=current, **(guard or {})).update(**updates)
        if changed == 1:
            for name, value in updates.items():
                setattr(write, name, value)
            entry = audit.write_draft(
                AuditAction.WRITE_TRANSITION,
                write,
                actor=actor,
                tenant=write.tenant.slug,
                event_uid=str(write.event.uid),
                request_id=request_id,
                target_ack=target_ack,
                data={"from": current, "to": to, "reason": reason, **(data or {})},
            )
            if defer_audit is not None:
                defer_audit.append(entry)
            else:
                audit.record_many([entry])
    if changed != 1:
        # Raised after the block: nothing was written, so a caller's enclosing transaction stays usable.
        raise InvalidTransition(f"write {write.uid} is no longer {current}; refresh and try again")
    return write


def transition_many(
    writes: list[Write],
    to: str,
    *,
    actor: Any,
    tenant_slug: str,
    event_uid: str,
    reason: str = "",
    request_id: str = "",
    defer_audit: list[audit.AuditDraft],
) -> None:
    """Moves several writes of one event, all in the same state, with one UPDATE (intake's hot path)."""
    if not writes:
        return
    current = writes[0].state
    if any(w.state != current for w in writes):
        raise InvalidTransition("transition_many needs writes in one state")
    check_transition(current, to)
    now = timezone.now()
    changed = Write.objects.filter(pk__in=[w.pk for w in writes], state=current).update(
        state=to, state_changed_at=now, updated_at=now
    )
    if changed != len(writes):
        raise InvalidTransition(f"{len(writes) - changed} write(s) moved while being queued")
    for w in writes:
        w.state, w.state_changed_at = to, now
        defer_audit.append(
            audit.write_draft(
                AuditAction.WRITE_TRANSITION,
                w,
                actor=actor,
                tenant=tenant_slug,
                event_uid=event_uid,
                request_id=request_id,
                data={"from": current, "to": to, "reason": reason},
            )
        )


@lru_cache(maxsize=256)
def _update_sql(alias: str, columns: tuple[str, ...], conditions: tuple[str, ...]) -> str:
    """UPDATE <write table> SET <columns> WHERE <pk> = %s AND <conditions>: the text is the same for every
    row of one shape, so it is built once per shape instead of by the ORM's compiler for each row."""
    meta, q = Write._meta, connections[alias].ops.quote_name
    sets = ", ".join(f"{q(meta.get_field(name).column)} = %s" for name in columns)
    where = " AND ".join(f"{q(meta.get_field(name).column)} = %s" for name in ("id", *conditions))
    return f"UPDATE {q(meta.db_table)} SET {sets} WHERE {where}"  # noqa: S608 - names from the model, quoted


def _plain(field: Field, name: str) -> bool:
    return field.concrete and not field.is_relation and field.name == name


def update_write_row(pk: int, where: dict[str, Any], values: dict[str, Any]) -> int:
    """`Write.objects.filter(pk=pk, **where).update(**values)`, and like it returns how many rows changed
    (0 or 1, for the caller to check), but with the statement text cached per shape: the worker runs
    this for every write (the lease fence, the settlement's guarded UPDATE), and compiling it was a large
    share of the worker's CPU per write.

    Only exact matches on plain columns take the cached path; anything else (a lookup such as `__lt`,
    None, which SQL's `=` never matches, an expression, a relation) goes through the ORM. Values are
    prepared as the ORM prepares them: `get_db_prep_save` for SET, `get_db_prep_value` for WHERE."""
    meta = Write._meta
    try:
        set_fields = [meta.get_field(name) for name in values]
        where_fields = [meta.get_field(name) for name in where]
    except FieldDoesNotExist:
        set_fields = where_fields = []
    cached = (
        bool(set_fields)
        and all(_plain(f, n) and not f.primary_key for f, n in zip(set_fields, values, strict=True))
        and all(_plain(f, n) for f, n in zip(where_fields, where, strict=True))
        and not any(v is None or hasattr(v, "resolve_expression") for v in where.values())
        and not any(hasattr(v, "resolve_expression") or hasattr(v, "_meta") for v in values.values())
    )
    if not cached:
        return Write.objects.filter(pk=pk, **where).update(**values)
    alias = router.db_for_write(Write)
    connection = connections[alias]
    params = [
        f.get_db_prep_save(v, connection=connection) for f, v in zip(set_fields, values.values(), strict=True)
    ]
    params.append(meta.pk.get_db_prep_value(pk, connection))
    params += [f.get_db_prep_value(v, connection) for f, v in zip(where_fields, where.values(), strict=True)]
    with transaction.mark_for_rollback_on_error(using=alias), connection.cursor() as cursor:
        cursor.execute(_update_sql(alias, tuple(values), tuple(where)), params)
        return cursor.rowcount
