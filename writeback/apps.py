from django.apps import AppConfig


class WritebackConfig(AppConfig):
    name = "writeback"
    verbose_name = "FHIR write-back"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from writeback.services.signins import signin_lockout_record

        def audit_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
            signin_lockout_record(username=username, ip_address=ip_address, request=request)

        # Strong reference: the receiver is a local function.
        user_locked_out.connect(audit_lockout, weak=False, dispatch_uid="writeback-audit-lockout")
