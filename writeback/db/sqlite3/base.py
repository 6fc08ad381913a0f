"""SQLite backend whose `flush` keeps the append-only triggers.

Django's `flush` (run by the test runner between transactional tests) empties SQLite tables with
DELETE, which our triggers refuse. PostgreSQL flushes with TRUNCATE, which row triggers never see. So on
SQLite the flush drops the triggers, empties the tables and puts the triggers back, all in one go. No
other statement path changes: ordinary UPDATE and DELETE on protected rows still fail.
"""

from django.db.backends.sqlite3 import base, operations

from writeback.db import counters, triggers


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = super().sql_flush(
            style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        if not statements:
            return statements
        # The count triggers go too: emptying the ledger must not leave negative deltas behind.
        return [
            *triggers.sqlite_drop_sql(),
            *counters.sqlite_drop_sql(),
            *statements,
            *triggers.sqlite_create_sql(self.connection),
            *counters.sqlite_create_sql(),
        ]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
