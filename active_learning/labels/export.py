"""The versioned label export: `DIR/<version>/` holds

- `labels.parquet`: the training labels current at `as_of`, one row per (listing, policy), with
  their split, provenance and label-issue flags;
- `machine_labels.parquet`: automatic and LLM-verified judgements no person has replaced, for
  analysis only (`for_training` false, no split): never train on them;
- `images.parquet`: the images of every exported listing by sha256, with their path under the
  portal's MEDIA_ROOT, so training fetches pixels by content hash;
- `manifest.json`: version, `as_of`, code version, counts, split boundaries, sha256 of each
  file, the easy-negative ratio used and the version it supersedes.

Determinism: what is exported depends only on the database and `as_of` (a label counts when
its judgement was made at or before `as_of`), rows are sorted, the schema is fixed, nothing
reads the clock, and Parquet is written without the Arrow schema blob or other varying
metadata. The version id is a hash of `as_of` and the files' hashes, so the same database
state and `as_of` give the same bytes under the same version. `qa_agreement` is the one value
taken as it is now rather than as it was at `as_of` (a QA review may come after the export).

Splits are by time, never random (progressive evaluation: validate and test on what came
after training): each listing goes whole to one split by the time of its first exported label,
the earliest listings to train, the latest to test, so no listing is in two splits; the
boundaries are in the manifest. Easy negatives are then cut to EXPORT_EASY_NEGATIVE_RATIO per
positive in each split, keeping those with the lowest hash of their label id.
"""

import hashlib
import importlib.metadata
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from active_learning.labels.models import Label
from active_learning.labels.services import listing_content_hashes
from detection.models import ListingImage
from moderation_portal.core import metrics

FORMAT = 1
SPLITS = ("train", "validation", "test")
LABELS_FILE = "labels.parquet"
MACHINE_FILE = "machine_labels.parquet"
IMAGES_FILE = "images.parquet"
MANIFEST_FILE = "manifest.json"
LIKELY_LABEL_ERROR_METHOD = (
    "confident learning (Northcutt et al. 2021), binary, per policy, with the detection score as "
    "the predicted probability: a row is flagged when the class whose probability reaches that "
    "class's mean self-confidence (and is the larger of such) differs from its label"
)

LABEL_SCHEMA = pa.schema(
    [
        ("label_id", pa.string()),
        ("listing_id", pa.string()),
        ("content_hash", pa.string()),
        ("content_changed", pa.bool_()),
        ("image_sha256s", pa.list_(pa.string())),
        ("policy", pa.string()),
        ("label", pa.int8()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("for_training", pa.bool_()),
        ("decided_by", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("split", pa.string()),
        ("decision_id", pa.int64()),
        ("labeling_item_id", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("score", pa.float64()),
        ("ladder_version", pa.int32()),
        ("llm_model", pa.string()),
        ("prompt_version", pa.string()),
        ("sampling_strategy", pa.string()),
        ("inclusion_probability", pa.float64()),
        ("qa_agreement", pa.bool_()),
        ("supersedes", pa.string()),
        ("trace_id", pa.string()),
        ("qa_disagreed", pa.bool_()),
        ("overturned", pa.bool_()),
        ("likely_label_error", pa.bool_()),
    ]
)
IMAGE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("listing_id", pa.string()),
        ("position", pa.int32()),
        ("path", pa.string()),
        ("content_type", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("byte_size", pa.int64()),
        ("state", pa.string()),
    ]
)
OPTIONAL_TEXT = (
    "decided_by",
    "model_name",
    "model_version",
    "llm_model",
    "prompt_version",
    "sampling_strategy",
    "trace_id",
)
FIELDS = (
    "id",
    "label_id",
    "listing_id",
    "listing__external_id",
    "content_hash",
    "policy",
    "label",
    "kind",
    "source",
    "for_training",
    "decided_by",
    "decided_at",
    "decision_id",
    "labeling_item_id",
    "model_name",
    "model_version",
    "score",
    "ladder_version",
    "llm_model",
    "prompt_version",
    "sampling_strategy",
    "inclusion_probability",
    "qa_agreement",
    "supersedes__label_id",
    "trace_id",
)


@dataclass(frozen=True)
class ExportResult:
    version: str
    path: Path
    manifest: dict


def labels_export(*, out_dir: Path, as_of: datetime) -> ExportResult:
    """Write the export of the labels as of `as_of` under `out_dir` (see the module). Writing
    the same version again rewrites the same bytes."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    as_of = as_of.astimezone(UTC)
    training, machine = _rows_as_of(as_of)
    boundaries = _split(training, as_of)
    ratio = float(settings.EXPORT_EASY_NEGATIVE_RATIO)
    training, easy = _easy_negatives_cut(training, ratio)
    _flag_likely_label_errors(training)

    listing_ids = {row["listing_pk"] for row in training + machine}
    images = _image_rows(listing_ids)
    current_hashes = listing_content_hashes(listing_ids)
    for row in training + machine:
        row["image_sha256s"] = images.by_listing.get(row["listing_pk"], [])
        row["content_changed"] = current_hashes.get(row["listing_pk"]) != row["content_hash"]

    files = {
        LABELS_FILE: _parquet(LABEL_SCHEMA, training),
        MACHINE_FILE: _parquet(LABEL_SCHEMA, machine),
        IMAGES_FILE: _parquet(IMAGE_SCHEMA, images.rows),
    }
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    as_of_text = as_of.isoformat().replace("+00:00", "Z")
    identity = json.dumps({"as_of": as_of_text, "files": digests}, sort_keys=True)
    version = f"{as_of:%Y%m%dT%H%M%SZ}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"

    split_rows = Counter(row["split"] for row in training)
    manifest = {
        "format": FORMAT,
        "version": version,
        "as_of": as_of_text,
        "code_version": _code_version(),
        "rows": len(training),
        "files": digests,
        "file_rows": {
            LABELS_FILE: len(training),
            MACHINE_FILE: len(machine),
            IMAGES_FILE: len(images.rows),
        },
        "splits": {
            name: {
                "from": _iso(boundaries[name][0]),
                "to": _iso(boundaries[name][1]),
                "rows": split_rows.get(name, 0),
                "listings": len({r["listing_pk"] for r in training if r["split"] == name}),
            }
            for name in SPLITS
        },
        "split_rule": (
            "each listing goes whole to the split whose [from, to) holds the decided_at of its "
            "first exported label (the last split includes `to`); fractions "
            f"validation={settings.EXPORT_VALIDATION_FRACTION}, "
            f"test={settings.EXPORT_TEST_FRACTION} of listings"
        ),
        "counts": {
            "split": _count(training, "split"),
            "policy": _count(training, "policy"),
            "kind": _count(training, "kind"),
            "source": _count(training, "source"),
            "label": {str(k): v for k, v in _count(training, "label").items()},
            "split_policy_kind": _nested_count(training),
        },
        "easy_negative_ratio": ratio,
        "easy_negatives": easy,
        "flags": {
            "qa_disagreed": sum(1 for r in training if r["qa_disagreed"]),
            "overturned": sum(1 for r in training if r["overturned"]),
            "likely_label_error": sum(1 for r in training if r["likely_label_error"]),
            "likely_label_error_method": LIKELY_LABEL_ERROR_METHOD,
        },
        "analysis_only": {
            "file": MACHINE_FILE,
            "rows": len(machine),
            "source": _count(machine, "source"),
            "note": "automatic and LLM-verified decisions no person confirmed: not for training",
        },
        "images": {"file": IMAGES_FILE, "rows": len(images.rows), "root": "MEDIA_ROOT"},
        "supersedes": _previous_version(out_dir, version, as_of),
    }
    target = out_dir / version
    target.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _write_atomically(target / name, data)
    # The manifest last: a version whose manifest exists is complete.
    _write_atomically(
        target / MANIFEST_FILE,
        (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
    )
    if metrics.ENABLED:
        for kind, n in Counter(row["kind"] for row in training).items():
            metrics.LABELS_EXPORTED.labels(kind).inc(n)
    return ExportResult(version=version, path=target, manifest=manifest)


def _rows_as_of(as_of: datetime) -> tuple[list[dict], list[dict]]:
    """The current training label of each (listing, policy) as of `as_of`, and the machine
    labels no person's judgement replaced, with the flags of their pair's history."""
    history: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for row in (
        Label.objects.filter(decided_at__lte=as_of)
        .order_by("listing_id", "policy", "decided_at", "id")
        .values(*FIELDS)
        .iterator(chunk_size=5000)
    ):
        history[(row["listing_id"], row["policy"])].append(row)
    training, machine = [], []
    for rows in history.values():
        qa_disagreed = any(r["qa_agreement"] is False for r in rows)
        overturned = any(r["source"] == Label.Source.APPEAL for r in rows)
        people = [r for r in rows if r["for_training"]]
        current = people[-1] if people else None
        since = (current["decided_at"], current["id"]) if current else None
        unconfirmed = [
            r
            for r in rows
            if not r["for_training"] and (since is None or (r["decided_at"], r["id"]) > since)
        ]
        for row, out in ((current, training), (unconfirmed[-1] if unconfirmed else None, machine)):
            if row is None:
                continue
            out.append(
                _row(row, qa_disagreed=qa_disagreed, overturned=overturned)
                | {"split": None, "likely_label_error": None}
            )
    key = lambda r: (r["listing_id"], r["policy"], r["label_id"])  # noqa: E731
    return sorted(training, key=key), sorted(machine, key=key)


def _row(row: dict, *, qa_disagreed: bool, overturned: bool) -> dict:
    out = {
        "label_id": row["label_id"],
        "listing_pk": row["listing_id"],
        "listing_id": row["listing__external_id"],
        "content_hash": row["content_hash"],
        "policy": row["policy"],
        "label": row["label"],
        "kind": row["kind"],
        "source": row["source"],
        "for_training": row["for_training"],
        "decided_at": row["decided_at"].astimezone(UTC),
        "decision_id": row["decision_id"],
        "labeling_item_id": row["labeling_item_id"],
        "score": row["score"],
        "ladder_version": row["ladder_version"],
        "inclusion_probability": row["inclusion_probability"],
        "qa_agreement": row["qa_agreement"],
        "supersedes": row["supersedes__label_id"],
        "qa_disagreed": qa_disagreed,
        "overturned": overturned,
    }
    for name in OPTIONAL_TEXT:
        out[name] = row[name] or None
    return out


def _split(rows: list[dict], as_of: datetime) -> dict[str, tuple[datetime | None, datetime]]:
    """Assign each row's split by its listing's first label time (see the module) and return
    each split's [from, to) boundaries."""
    first: dict[int, datetime] = {}
    for row in rows:
        at = row["decided_at"]
        if row["listing_pk"] not in first or at < first[row["listing_pk"]]:
            first[row["listing_pk"]] = at
    ordered = sorted(first.values())
    n = len(ordered)

    def share(fraction: float) -> int:
        # At least one listing for a split asked for, once there are enough for all three.
        k = round(n * fraction)
        return max(k, 1) if fraction > 0 and n >= len(SPLITS) else k

    n_test = share(settings.EXPORT_TEST_FRACTION)
    n_validation = share(settings.EXPORT_VALIDATION_FRACTION)
    test_from = ordered[n - n_test] if n_test else None
    validation_from = ordered[n - n_test - n_validation] if n_validation else test_from
    start = ordered[0] if ordered else None
    for row in rows:
        at = first[row["listing_pk"]]
        if test_from is not None and at >= test_from:
            row["split"] = "test"
        elif validation_from is not None and at >= validation_from:
            row["split"] = "validation"
        else:
            row["split"] = "train"
    train_to = validation_from or test_from or as_of
    return {
        "train": (start, train_to),
        "validation": (validation_from or train_to, test_from or as_of),
        "test": (test_from or as_of, as_of),
    }


def _label_draw(label_id: str) -> str:
    return hashlib.sha256(f"easy-negative:{label_id}".encode()).hexdigest()


def _easy_negatives_cut(rows: list[dict], ratio: float) -> tuple[list[dict], dict]:
    """Keep at most floor(ratio × positives) easy negatives per split: those with the lowest
    hash of their label id, so a kept label stays kept while the pool grows slowly."""
    kept_ids: set[str] = set()
    summary = {}
    for name in SPLITS:
        in_split = [r for r in rows if r["split"] == name]
        positives = sum(1 for r in in_split if r["kind"] == Label.Kind.POSITIVE)
        easy = sorted(
            (r for r in in_split if r["kind"] == Label.Kind.EASY_NEGATIVE),
            key=lambda r: _label_draw(r["label_id"]),
        )
        keep = min(len(easy), math.floor(ratio * positives + 1e-9))
        kept_ids.update(r["label_id"] for r in easy[:keep])
        summary[name] = {"available": len(easy), "kept": keep}
    return [
        r for r in rows if r["kind"] != Label.Kind.EASY_NEGATIVE or r["label_id"] in kept_ids
    ], summary


def _flag_likely_label_errors(rows: list[dict]) -> None:
    """Confident learning, binary, per policy (LIKELY_LABEL_ERROR_METHOD). The threshold of a
    class is the mean predicted probability of that class over rows labelled with it; a row
    whose confidently predicted class (probability at or above that class's threshold, the
    larger if both) is not its label is a likely label error. Rows without a score, and policies
    lacking one of the two classes, get no verdict (null)."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["score"] is not None:
            by_policy[row["policy"]].append(row)
    for policy_rows in by_policy.values():
        ones = [r["score"] for r in policy_rows if r["label"] == 1]
        zeros = [1.0 - r["score"] for r in policy_rows if r["label"] == 0]
        if not ones or not zeros:
            continue
        threshold = {1: math.fsum(ones) / len(ones), 0: math.fsum(zeros) / len(zeros)}
        for row in policy_rows:
            probability = {1: row["score"], 0: 1.0 - row["score"]}
            confident = [c for c in (1, 0) if probability[c] >= threshold[c]]
            if not confident:
                row["likely_label_error"] = False
                continue
            predicted = max(confident, key=lambda c: (probability[c], c))
            row["likely_label_error"] = predicted != row["label"]


@dataclass
class _Images:
    rows: list[dict]
    by_listing: dict[int, list[str]]


def _image_rows(listing_ids: set[int]) -> _Images:
    rows, by_listing = [], defaultdict(list)
    for image in (
        ListingImage.objects.filter(listing_id__in=listing_ids)
        .select_related("listing")
        .order_by("listing__external_id", "position", "id")
    ):
        by_listing[image.listing_id].append(image.sha256)
        rows.append(
            {
                "sha256": image.sha256,
                "listing_id": image.listing.external_id,
                "position": image.position,
                "path": image.content.name or None,
                "content_type": image.content_type or None,
                "width": image.width,
                "height": image.height,
                "byte_size": image.byte_size,
                "state": image.state,
            }
        )
    return _Images(rows=rows, by_listing=dict(by_listing))


def _parquet(schema: pa.Schema, rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )
    sink = pa.BufferOutputStream()
    # store_schema=False: no base64 Arrow schema in the footer; the fixed schema is the contract.
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        store_schema=False,
        version="2.6",
    )
    return sink.getvalue().to_pybytes()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _previous_version(out_dir: Path, version: str, as_of: datetime) -> str | None:
    """The newest other version in `out_dir` no later than this one's `as_of`."""
    best: tuple[str, str] | None = None
    if not out_dir.is_dir():
        return None
    for manifest_path in out_dir.glob(f"*/{MANIFEST_FILE}"):
        try:
            other = json.loads(manifest_path.read_text())
            other_version, other_as_of = other["version"], other["as_of"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if other_version == version:
            continue
        if datetime.fromisoformat(other_as_of) <= as_of and (
            best is None or (other_as_of, other_version) > best
        ):
            best = (other_as_of, other_version)
    return best[1] if best else None


def _code_version() -> str:
    try:
        return importlib.metadata.version("moderation-portal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _count(rows: list[dict], field: str) -> dict:
    return dict(sorted(Counter(r[field] for r in rows).items(), key=lambda kv: str(kv[0])))


def _nested_count(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        level = out.setdefault(r["split"], {}).setdefault(r["policy"], {})
        level[r["kind"]] = level.get(r["kind"], 0) + 1
    return {
        s: {p: dict(sorted(k.items())) for p, k in sorted(v.items())}
        for s, v in sorted(out.items())
    }
