from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from writeback.models import Tenant
from writeback.services.permissions import grant_action_permission
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
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument(
            "--manage-consent",
            action="store_true",
            help="let this client app record and revoke consents (POST /api/v1/consents) on its tenants",
        )

    def handle(self, *args, **opts):
        # Every argument is checked before anything is written: a bad one leaves no half-made account.
        tenants = self._tenants(opts["tenant"])
        with transaction.atomic():
            user = self._user(opts["username"], create=opts["create_user"])
            if opts["manage_consent"]:
                grant_action_permission(user, "manage_consent", actor=ACTOR)
            _, key = api_token_create(user=user, tenants=tenants, name=opts["name"], actor=ACTOR)
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
            return user
        if not create:
            raise CommandError(f"no user {username!r} (use --create-user for a service account)")
        user = User.objects.create_user(username=username)
        user.set_unusable_password()
        user.save()
        return user
