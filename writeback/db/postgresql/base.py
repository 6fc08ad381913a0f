"""PostgreSQL backend whose `flush` gets past the TRUNCATE triggers of the append-only tables.

Django's `flush` (run by the test runner between transactional tests, and by `manage.py flush`) empties
PostgreSQL tables with TRUNCATE, which the audit and event tables refuse. So the flush drops their
triggers, truncates and puts the triggers back, in one transaction. Only the tables' owner may drop a
trigger, so for the runtime role a flush still fails; no other statement path changes.
"""

from django.db.backends.postgresql import base, operations

from writeback.db import triggers


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = super().sql_flush(
            style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        # Even without the protected tables in `tables`, a TRUNCATE ... CASCADE may reach them.
        if not statements:
            return statements
        return [*triggers.postgres_drop_sql(), *statements, *triggers.postgres_create_sql()]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
