from django.apps import AppConfig


class WritebackConfig(AppConfig):
    name = "writeback"
    verbose_name = "FHIR write-back"
    default_auto_field = "django.db.models.BigAutoField"
