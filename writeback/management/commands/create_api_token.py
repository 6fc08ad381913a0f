from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from writeback.models import Tenant
from writeback.services.tokens import api_token_create


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

    def handle(self, *args, **opts):
        User = get_user_model()
        user = User.objects.filter(username=opts["username"]).first()
        if user is None:
            if not opts["create_user"]:
                raise CommandError(f"no user {opts['username']!r} (use --create-user for a service account)")
            user = User.objects.create_user(username=opts["username"])
            user.set_unusable_password()
            user.save()
        tenants = []
        for slug in opts["tenant"]:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise CommandError(f"no tenant {slug!r}")
            tenants.append(tenant)
        _, key = api_token_create(
            user=user, tenants=tenants, name=opts["name"], actor="command:create_api_token"
        )
        self.stdout.write(key)
