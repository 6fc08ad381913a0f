"""Consent actions become the FHIR interactions we perform (create, update, patch, delete; [] = all).

Before, the only action ever checked was the word `write`, for every write: a consent naming `write`
allowed every write, so it becomes `[]` (all), which allows exactly the same. Other lists are left as
they are: words outside the vocabulary never matched a write before and match none now (fail closed),
and a list already naming the new words (`["create"]`) now allows what it says.
"""

from django.db import migrations


def write_means_all(apps, schema_editor):
    Consent = apps.get_model("writeback", "Consent")
    # Filtered here, not with a JSON lookup: `contains` on a JSONField is not available on SQLite.
    ids = [c.pk for c in Consent.objects.only("pk", "actions").iterator() if "write" in (c.actions or [])]
    Consent.objects.filter(pk__in=ids).update(actions=[])


class Migration(migrations.Migration):
    dependencies = [
        ("writeback", "0008_audit_key_id"),
    ]

    # Backwards there is nothing to undo: `[]` meant every write before this migration as well.
    operations = [migrations.RunPython(write_means_all, migrations.RunPython.noop)]
