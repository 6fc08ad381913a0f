from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from writeback.errors import DomainError
from writeback.models import Tenant
from writeback.services.permissions import client_app_enroll, grant_action_permission
from writeback.services.tokens import api_token_create

ACTOR = "command:create_api_token"


class Command(BaseCommand):
    help = "Creates an API token for a user (the key is printed once and stored only as a hash)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--tenant",
            action="append",
            default=[],
            metavar="SLUG",
            help="limit the token to this tenant and grant the user access to it (repeatable)",
        )
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="create the user if missing, as a client app's service account (role client_app)",
        )
        parser.add_argument(
            "--client-app",
            action="store_true",
            help="make the user a client app's service account (role client_app: posts events); "
            "refused for a person's account",
        )
        parser.add_argument(
            "--on-behalf",
            action="store_true",
            help="let this client app name another user of its tenants as an event's initiator "
            "(implies --client-app)",
        )
        parser.add_argument(
            "--manage-consent",
            action="store_true",
            help="let this client app record and revoke consents (POST /api/v1/consents) on its tenants "
            "(implies --client-app)",
        )

    def handle(self, *args, **opts):
        # Every argument is checked before anything is written: a bad one leaves no half-made account.
        tenants = self._tenants(opts["tenant"])
        client_app = any(opts[o] for o in ("client_app", "on_behalf", "manage_consent"))
        try:
            with transaction.atomic():
                user, created = self._user(opts["username"], create=opts["create_user"])
                if client_app or created:
                    client_app_enroll(user, actor=ACTOR)
                for flag, action in (("on_behalf", "submit_on_behalf"), ("manage_consent", "manage_consent")):
                    if opts[flag]:
                        grant_action_permission(user, action, actor=ACTOR)
                _, key = api_token_create(user=user, tenants=tenants, name=opts["name"], actor=ACTOR)
        except DomainError as exc:
            raise CommandError(str(exc))
        self.stdout.write(key)

    @staticmethod
    def _tenants(slugs: list[str]) -> list[Tenant]:
        found = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
        missing = [slug for slug in slugs if slug not in found]
        if missing:
            raise CommandError(f"no tenant {', '.join(repr(s) for s in missing)}")
        return [found[slug] for slug in dict.fromkeys(slugs)]

    @staticmethod
    def _user(username: str, *, create: bool):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            return user, False
        if not create:
            raise CommandError(f"no user {username!r} (use --create-user for a service account)")
        user = User.objects.create_user(username=username)
        user.set_unusable_password()
        user.save()
        return user, True
