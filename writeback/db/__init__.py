"""What the database itself enforces or keeps (triggers, roles), shared by the modules below."""

from collections.abc import Iterable

from django.db.backends.base.base import BaseDatabaseWrapper


def execute_all(connection: BaseDatabaseWrapper, statements: Iterable[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def installed_triggers(connection: BaseDatabaseWrapper, names: Iterable[str]) -> set[str]:
    """Which of `names` exist as triggers in the database now."""
    wanted = set(names)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT DISTINCT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s)",
                [sorted(wanted)],
            )
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()} & wanted
