from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Tenant, UnmappedAuthor
from writeback.services.authors import practitioner_map, practitioner_unmap, tenant_set_author_policy


class Command(BaseCommand):
    help = (
        "Maps a person to the EHR's Practitioner at a tenant (the author the chart names), removes the "
        "mapping, or sets what happens to people without one. Audited with the value before and after."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("username", nargs="?", default="")
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--practitioner", default="", metavar="Practitioner/ID")
        target.add_argument("--remove", action="store_true", help="remove the user's mapping")
        parser.add_argument(
            "--unmapped",
            choices=UnmappedAuthor.values,
            help="the tenant's policy for initiators without a mapping",
        )
        parser.add_argument("--organization", default=None, metavar="Organization/ID")
        parser.add_argument(
            "--provenance",
            choices=["on", "off"],
            help="write one Provenance per event (where the vendor can)",
        )
        parser.add_argument("--reason", default="")

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {opts['slug']!r}")
        actor = "command:tenant_map_user"
        person = opts["practitioner"] or opts["remove"]
        policy = opts["unmapped"] is not None or opts["organization"] is not None or opts["provenance"]
        if not person and not policy:
            raise CommandError(
                "give USERNAME with --practitioner or --remove, or --unmapped/--organization/--provenance"
            )
        if person and not opts["username"]:
            raise CommandError("--practitioner and --remove need a USERNAME")
        try:
            if policy:
                tenant = tenant_set_author_policy(
                    tenant=tenant,
                    unmapped_author=opts["unmapped"] or tenant.unmapped_author,
                    organization_ref=tenant.organization_ref
                    if opts["organization"] is None
                    else opts["organization"],
                    actor=actor,
                    reason=opts["reason"],
                    write_provenance=None if opts["provenance"] is None else opts["provenance"] == "on",
                )
                org = tenant.organization_ref or "-"
                self.stdout.write(
                    f"{tenant.slug}: unmapped initiators -> {tenant.unmapped_author}; {org}; "
                    f"Provenance {'on' if tenant.write_provenance else 'off'}"
                )
            if opts["remove"]:
                removed = practitioner_unmap(
                    tenant=tenant, username=opts["username"], actor=actor, reason=opts["reason"]
                )
                word = "removed the mapping of" if removed else "no mapping to remove for"
                self.stdout.write(f"{tenant.slug}: {word} {opts['username']}")
            elif opts["practitioner"]:
                mapping = practitioner_map(
                    tenant=tenant,
                    username=opts["username"],
                    practitioner_ref=opts["practitioner"],
                    actor=actor,
                    reason=opts["reason"],
                )
                self.stdout.write(f"{tenant.slug}: {opts['username']} -> {mapping.practitioner_ref}")
        except DomainError as exc:
            raise CommandError(f"{exc.path}: {exc}" if exc.path else str(exc))
