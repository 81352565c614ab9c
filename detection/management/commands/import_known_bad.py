import json

from django.core.management.base import BaseCommand, CommandError

from detection.evidence.banks import bank_state
from detection.evidence.references import known_bad_import
from moderation_portal.core.audit import AuditAction, audit_record

MAX_LINE = 8 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Import a bank of known-bad images from a JSON-lines file: one "
        "{id, policy, title, image (base64)} "
        "a line. Hashes are always stored; reference embeddings too when an image model is "
        "configured."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--name", default=None, help="the bank's name (default: the file name)")

    def handle(self, *args, path, name=None, **options):
        entries, bad = [], []
        try:
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if len(line) > MAX_LINE:
                        bad.append({"line": n, "reason": "line too long"})
                        continue
                    if line.strip():
                        try:
                            entry = json.loads(line)
                            if isinstance(entry, dict):
                                entry["_line"] = n
                            entries.append(entry)
                        except ValueError as exc:
                            bad.append({"line": n, "reason": f"not JSON: {exc}"})
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        result = known_bad_import(entries=entries, source_name=name or path.rsplit("/", 1)[-1])
        result["rejected"] = bad + result["rejected"]
        audit_record(
            action=AuditAction.KNOWN_BAD_IMPORTED,
            object_type="knownbadimage",
            object_id="bank",
            data={
                "path": path,
                **{k: result[k] for k in ("imported", "embedded")},
                "rejected": len(result["rejected"]),
                "bank_version": bank_state().version,
            },
        )
        for item in result["rejected"]:
            self.stdout.write(f"line {item['line']}: rejected ({item['reason']})")
        self.stdout.write(
            f"imported {result['imported']} known-bad images, {result['embedded']} reference "
            f"embeddings"
        )
        if result["embedding_note"]:
            self.stdout.write(f"no embeddings: {result['embedding_note']}")
