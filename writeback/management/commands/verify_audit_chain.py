from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from writeback.services.audit import verify_chain
from writeback.services.audit_anchor import AnchorError, audit_head_load, audit_heads_problems


class Command(BaseCommand):
    help = (
        "Verifies the audit trail's keyed hash chain, and with --expect-head that it still holds each "
        "exported head (catches a cut tail or an emptied table); exits 1 naming what is wrong."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--expect-head",
            nargs="+",
            default=[],
            metavar="FILE",
            help="head documents written by export_audit_head, each checked (signature, then the chain)",
        )

    def handle(self, *args, **opts):
        try:
            heads = [audit_head_load(self._read(name), source=name) for name in opts["expect_head"]]
        except AnchorError as exc:
            raise CommandError(str(exc)) from None
        report = verify_chain(capture={head.seq for head in heads})
        problems = ([] if report.ok else [str(report)]) + audit_heads_problems(heads, report)
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(str(report))
        for head in heads:
            held = f"entry #{head.seq} still carries the anchored hash" if head.seq else "an empty chain"
            self.stdout.write(f"{head.source}: {held}")

    @staticmethod
    def _read(name: str) -> str:
        try:
            return Path(name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{name}: cannot be read ({exc})") from None
