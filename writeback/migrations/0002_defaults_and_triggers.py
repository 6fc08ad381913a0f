"""Roles, the default contract matrix, and the triggers that make audit rows and events append-only."""

from django.db import migrations


def load_defaults(apps, schema_editor):
    from writeback.contract_defaults import install_defaults

    install_defaults(apps.get_model("auth", "Group"), apps.get_model("writeback", "ContractRule"))


def install_triggers(apps, schema_editor):
    from writeback.db import triggers

    triggers.install(schema_editor.connection)


def uninstall_triggers(apps, schema_editor):
    from writeback.db import triggers

    triggers.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("writeback", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(load_defaults, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, uninstall_triggers),
    ]
