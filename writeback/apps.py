from django.apps import AppConfig


class WritebackConfig(AppConfig):
    name = "writeback"
    verbose_name = "FHIR write-back"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.db.models.signals import post_migrate, pre_migrate

        from writeback.services.signins import signin_lockout_record

        def audit_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
            signin_lockout_record(username=username, ip_address=ip_address, request=request)

        # Strong reference: the receiver is a local function.
        user_locked_out.connect(audit_lockout, weak=False, dispatch_uid="writeback-audit-lockout")

        def restore_count_triggers(sender, using="default", plan=None, **kwargs) -> None:
            from writeback.services.counts import ensure_installed

            # Only after migrations ran forward: a rollback to before the counts leaves no table.
            if plan and not any(backwards for _, backwards in plan):
                ensure_installed(using)
                _restore_stamp_triggers(using)

        def lift_count_triggers(sender, using="default", plan=None, **kwargs) -> None:
            from django.db import connections

            from writeback.db import counters, stamps

            # SQLite re-checks every trigger whenever a migration rebuilds a table, and the count
            # triggers name other tables: lifted before migrating forward, put back (and the counts
            # rebuilt) by restore_count_triggers afterwards.
            connection = connections[using]
            forward = plan and not any(backwards for _, backwards in plan)
            if connection.vendor == "sqlite" and forward and counters.installed(connection):
                counters.uninstall(connection)
            if connection.vendor == "sqlite" and forward and _has_stamp_table(connection):
                stamps.uninstall(connection)

        pre_migrate.connect(lift_count_triggers, sender=self, dispatch_uid="writeback-lift-count-triggers")
        post_migrate.connect(restore_count_triggers, sender=self, dispatch_uid="writeback-count-triggers")


def _has_stamp_table(connection) -> bool:
    from writeback.db import stamps

    with connection.cursor() as cursor:
        return stamps.STAMP in connection.introspection.table_names(cursor)


def _restore_stamp_triggers(using: str) -> None:
    """The contract stamp's triggers, put back after a migration (SQLite drops a table's triggers when
    it rebuilds the table, and they are lifted before migrating forward)."""
    from django.db import connections

    from writeback.db import stamps

    connection = connections[using]
    if _has_stamp_table(connection):
        stamps.ensure_installed(connection)
