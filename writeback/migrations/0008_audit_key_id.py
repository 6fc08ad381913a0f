"""Audit entries record the id of the key that hashed them ("" for the unkeyed entries written before),
and PostgreSQL refuses TRUNCATE of the append-only tables."""

from django.db import migrations, models


def install_triggers(apps, schema_editor):
    # Also puts back SQLite's triggers: adding a column there rebuilds the table, which drops them.
    from writeback.db import triggers

    triggers.install(schema_editor.connection)


def drop_truncate_triggers(apps, schema_editor):
    from writeback.db import triggers

    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            for statement in triggers.postgres_truncate_drop_sql():
                cursor.execute(statement)


def restore_sqlite_triggers(apps, schema_editor):
    # Reversing: removing the column rebuilds the SQLite table (and drops its triggers) once more.
    from writeback.db import triggers

    if schema_editor.connection.vendor == "sqlite":
        triggers.install(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('writeback', '0007_separation_of_duties'),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, restore_sqlite_triggers),
        migrations.AddField(
            model_name='auditentry',
            name='key_id',
            field=models.CharField(blank=True, default='', max_length=16),
        ),
        migrations.RunPython(install_triggers, drop_truncate_triggers),
    ]
