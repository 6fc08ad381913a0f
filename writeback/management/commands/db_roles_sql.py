from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from writeback.db import roles


class Command(BaseCommand):
    help = (
        "Prints the PostgreSQL GRANT/REVOKE statements for a least-privilege runtime role: ordinary rights "
        "on the app's tables, SELECT and INSERT only on the append-only ones, owner of nothing. Pipe them "
        "into psql as a superuser after every migrate (docs/security.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--runtime-role", required=True, help="the role the web and worker processes use")
        parser.add_argument("--owner-role", required=True, help="the role that owns the tables, runs migrate")
        parser.add_argument("--dbname", help="the database (default: the configured PostgreSQL database)")
        parser.add_argument("--schema", default="public")
        parser.add_argument(
            "--transfer-ownership",
            action="store_true",
            help="also hand the existing tables to the owner role (a database migrated by another role)",
        )

    def handle(self, *args, **opts):
        postgres = connection.vendor == "postgresql"
        dbname = opts["dbname"] or (connection.settings_dict["NAME"] if postgres else None)
        if not dbname:
            raise CommandError("the configured database is not PostgreSQL: name one with --dbname")
        if opts["transfer_ownership"] and not postgres:
            raise CommandError(
                "--transfer-ownership reads the tables from the configured PostgreSQL database"
            )
        try:
            sql = roles.runtime_role_sql(
                runtime_role=opts["runtime_role"],
                owner_role=opts["owner_role"],
                database=dbname,
                schema=opts["schema"],
            )
            if opts["transfer_ownership"]:
                tables = connection.introspection.table_names(include_views=False)
                sql = (
                    roles.ownership_sql(owner_role=opts["owner_role"], tables=tables, schema=opts["schema"])
                    + sql
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"-- Least-privilege roles for database {dbname}: run as a superuser after migrate."
        )
        for statement in sql:
            self.stdout.write(statement + ";")
