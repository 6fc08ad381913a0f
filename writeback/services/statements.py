"""Statements the worker runs for every write or every batch, with their text built once per shape
instead of by the ORM's compiler each time (compiling was a large share of the worker's CPU per write).

Values are prepared exactly as the ORM prepares them (`get_db_prep_save`, `get_db_prep_value`), so what
is stored is the same; whatever these do not cover goes through the ORM unchanged."""

from functools import lru_cache
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import connections, router, transaction
from django.db.models import Field, Model

from writeback.models import Write


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


@lru_cache(maxsize=64)
def _insert_sql(alias: str, model: type[Model], rows: int, returning: bool) -> str:
    connection = connections[alias]
    q = connection.ops.quote_name
    meta = model._meta
    fields = _insert_fields(model)
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = f"INSERT INTO {q(meta.db_table)} ({', '.join(q(f.column) for f in fields)}) VALUES "  # noqa: S608
    sql += ", ".join([row] * rows)
    if returning:
        sql += f" RETURNING {q(meta.pk.column)}"
    return sql


@lru_cache(maxsize=64)
def _insert_fields(model: type[Model]) -> tuple[Field, ...]:
    """The columns an INSERT of `model` names: every concrete one but an auto-incremented primary key."""
    meta = model._meta
    return tuple(
        f for f in meta.concrete_fields if not (f.primary_key and f.db_returning) and not f.generated
    )


def insert_rows(model: type[Model], objs: list[Model]) -> None:
    """`model.objects.bulk_create(objs)` for new rows (an auto-incremented key unset, or a key of their own
    such as the audit trail's `seq`): one INSERT whose text is cached per model and row count, values
    prepared as bulk_create prepares them (`pre_save` for adding, then `get_db_prep_save`), and the keys
    the database gave set on the objects. Large batches, expressions as values and database-side defaults
    go through bulk_create."""
    if not objs:
        return
    alias = router.db_for_write(model)
    connection = connections[alias]
    fields = _insert_fields(model)
    auto_pk = model._meta.pk.db_returning
    returning = auto_pk and connection.features.can_return_rows_from_bulk_insert
    values: list[Any] = []
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
        values += [f.pre_save(obj, add=True) for f in fields]
    if (
        len(values) > 900  # under every backend's limit on parameters (SQLite's was 999)
        or (auto_pk and not returning)
        or (auto_pk and any(obj.pk is not None for obj in objs))
        or any(hasattr(v, "resolve_expression") for v in values)
    ):
        model._default_manager.bulk_create(objs)
        return
    params = [
        f.get_db_prep_save(v, connection=connection) for f, v in zip(fields * len(objs), values, strict=True)
    ]
    with transaction.mark_for_rollback_on_error(using=alias), connection.cursor() as cursor:
        cursor.execute(_insert_sql(alias, model, len(objs), returning), params)
        keys = [row[0] for row in cursor.fetchall()] if returning else []
    for i, obj in enumerate(objs):
        if returning:
            obj.pk = keys[i]
        obj._state.adding = False
        obj._state.db = alias
