from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Operator console"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from console.middleware import mark_signed_in

        user_logged_in.connect(mark_signed_in, dispatch_uid="console-mark-signed-in")
