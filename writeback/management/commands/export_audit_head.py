from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError

from writeback import audit_keys
from writeback.services.audit_anchor import AnchorError, audit_head_export

ACTOR = "command:export_audit_head"


class Command(BaseCommand):
    help = (
        "Verifies the audit chain and writes its head (seq, hash, entry count, time, key id), signed with "
        "WRITEBACK_AUDIT_SIGNING_KEY, as JSON for write-once storage; `verify_audit_chain --expect-head` "
        "checks the chain against it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", metavar="FILE", help="write to FILE (never overwritten), not stdout")
        parser.add_argument(
            "--public-key",
            action="store_true",
            help="only print the signing key's public key (for WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS) and exit",
        )

    def handle(self, *args, **opts):
        if opts["public_key"]:
            self.stdout.write(self._public_key())
            return
        output = Path(opts["output"]) if opts["output"] else None
        if output is not None and (output.exists() or not output.parent.is_dir()):
            raise CommandError(
                f"{output}: exists already, or its folder does not (heads are never overwritten)"
            )
        try:
            doc = audit_head_export(actor=ACTOR)
        except AnchorError as exc:
            raise CommandError(str(exc)) from None
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
        if output is None:
            self.stdout.write(text, ending="")
            return
        with output.open("x") as handle:
            handle.write(text)
        self.stderr.write(f"head #{doc['head_seq']} {doc['head_hash'][:16]} written to {output}")

    @staticmethod
    def _public_key() -> str:
        key = audit_keys.signing_key()
        if key is None:
            raise CommandError("no signing key: set WRITEBACK_AUDIT_SIGNING_KEY (or _FILE)")
        return audit_keys.public_key_text(key.public_key())
