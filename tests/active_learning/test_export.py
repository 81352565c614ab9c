"""The versioned label export through its command and task: byte-identical reruns, time splits
that never share a listing, the manifest's counts and hashes, the easy-negative ratio, label
issue flags, analysis-only machine labels, and the embedded SQLite mode."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.utils import timezone

from active_learning.labels.models import Label
from active_learning.tasks import export_labels_task
from reviews.cases.claims import case_claim_next, case_decide
from reviews.decisions.services import DecisionSpec
from reviews.qa import services as qa_services
from tests.embedded_mode import embedded_env, embedded_manage
from tests.reviews.helpers import open_cases

VIOLATION = DecisionSpec(verdict="violation", policy="firearms", action="remove")
NOT_VIOLATING = DecisionSpec(verdict="no_violation", policy=None, action="none")


def decide(user, score, spec=VIOLATION, **kw):
    (case,) = open_cases(score, **kw)
    claimed = case_claim_next(user=user)
    assert claimed.pk == case.pk
    return case_decide(case=claimed, user=user, spec=spec)


def export(out: Path, as_of: datetime) -> dict:
    call_command(
        "export_labels", "--out", str(out), "--as-of", as_of.isoformat(), stdout=StringIO()
    )
    manifests = sorted(out.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime_ns)
    return json.loads(manifests[-1].read_text())


def read(out: Path, manifest: dict, name: str) -> list[dict]:
    return pq.read_table(out / manifest["version"] / name).to_pylist()


@pytest.fixture
def labelled(db, moderator, settings):
    """Sixteen listings judged one after another: 8 positives (even), 2 hard negatives (1, 3),
    6 easy negatives (random sample events), the first listing judged again under another
    policy last, and one automatic removal nobody confirmed."""
    settings.QA_HUMAN_SAMPLE_RATE = 0.0
    settings.EXPORT_EASY_NEGATIVE_RATIO = 0.5
    settings.EXPORT_VALIDATION_FRACTION = 0.25
    settings.EXPORT_TEST_FRACTION = 0.25
    for n in range(16):
        if n % 2 == 0:
            decide(moderator, 0.6 + n / 100, listing=f"lst-{n:02d}")
        elif n in (1, 3):
            decide(moderator, 0.7, NOT_VIOLATING, listing=f"lst-{n:02d}")
        else:
            decide(moderator, 0.55, NOT_VIOLATING, listing=f"lst-{n:02d}", sample=True)
    decide(
        moderator,
        0.8,
        DecisionSpec(verdict="violation", policy="drugs", action="warn"),
        listing="lst-00",
    )
    open_cases(0.97, listing="lst-auto")
    return timezone.now() + timedelta(seconds=1)


@pytest.mark.django_db
def test_the_export_is_byte_identical_for_the_same_state_and_as_of(labelled, tmp_path):
    out = tmp_path / "exports"
    first = export(out, labelled)
    files = {p.name: p.read_bytes() for p in (out / first["version"]).iterdir()}
    again = export(out, labelled)
    assert again == first
    assert {p.name: p.read_bytes() for p in (out / first["version"]).iterdir()} == files
    assert sorted(files) == [
        "images.parquet",
        "labels.parquet",
        "machine_labels.parquet",
        "manifest.json",
    ]
    assert [p.name for p in out.iterdir()] == [first["version"]]
    assert first["supersedes"] is None
    assert first["version"].startswith(labelled.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ-"))
    for name, digest in first["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == digest
    # a fresh directory, the same state and as-of: the same version and bytes
    elsewhere = export(tmp_path / "other", labelled)
    assert elsewhere["version"] == first["version"]
    assert (tmp_path / "other" / first["version"] / "labels.parquet").read_bytes() == files[
        "labels.parquet"
    ]


@pytest.mark.django_db
def test_splits_by_time_keep_each_listing_in_one_split(labelled, tmp_path):
    manifest = export(tmp_path, labelled)
    rows = read(tmp_path, manifest, "labels.parquet")
    by_split: dict[str, set] = {}
    first_label: dict[str, datetime] = {}
    for row in rows:
        by_split.setdefault(row["split"], set()).add(row["listing_id"])
        at = row["decided_at"]
        first_label[row["listing_id"]] = min(first_label.get(row["listing_id"], at), at)
    assert set(by_split) == {"train", "validation", "test"}
    assert not (by_split["train"] & by_split["validation"])
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["validation"] & by_split["test"])
    # lst-00 has two labels (firearms early, drugs last) and stays whole in train
    assert {r["split"] for r in rows if r["listing_id"] == "lst-00"} == {"train"}
    assert {(r["policy"], r["label"]) for r in rows if r["listing_id"] == "lst-00"} == {
        ("firearms", 1),
        ("drugs", 1),
    }
    latest_train = max(first_label[x] for x in by_split["train"])
    assert latest_train < min(first_label[x] for x in by_split["validation"])
    assert max(first_label[x] for x in by_split["validation"]) < min(
        first_label[x] for x in by_split["test"]
    )
    splits = manifest["splits"]
    for name in ("train", "validation", "test"):
        assert splits[name]["rows"] == sum(1 for r in rows if r["split"] == name)
        starts = [first_label[x] for x in by_split[name]]
        assert splits[name]["from"] <= min(starts).isoformat().replace("+00:00", "Z")
    assert splits["train"]["to"] == splits["validation"]["from"]
    assert splits["validation"]["to"] == splits["test"]["from"]
    assert splits["test"]["to"] == manifest["as_of"]
    # 16 listings: 8 train, 4 validation, 4 test by first label time, less the easy negatives
    # left out (one each in validation and test)
    assert [splits[n]["listings"] for n in ("train", "validation", "test")] == [8, 3, 3]


@pytest.mark.django_db
def test_the_easy_negative_ratio_and_the_manifest_counts(labelled, tmp_path):
    manifest = export(tmp_path, labelled)
    rows = read(tmp_path, manifest, "labels.parquet")
    assert manifest["easy_negative_ratio"] == 0.5
    for name, summary in manifest["easy_negatives"].items():
        in_split = [r for r in rows if r["split"] == name]
        positives = sum(1 for r in in_split if r["kind"] == "positive")
        easy = sum(1 for r in in_split if r["kind"] == "easy_negative")
        assert easy == summary["kept"] == min(summary["available"], int(0.5 * positives))
    # train: 5 positives, 2 easy (floor 2.5: both kept); validation and test: 2 positives and
    # 2 easy each, one kept
    assert [manifest["easy_negatives"][n] for n in ("train", "validation", "test")] == [
        {"available": 2, "kept": 2},
        {"available": 2, "kept": 1},
        {"available": 2, "kept": 1},
    ]
    assert manifest["rows"] == len(rows) == manifest["file_rows"]["labels.parquet"]
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    assert manifest["counts"]["kind"] == kinds
    assert kinds == {"positive": 9, "hard_negative": 2, "easy_negative": 4}
    assert manifest["counts"]["policy"] == {"drugs": 1, "firearms": len(rows) - 1}
    assert manifest["counts"]["source"] == {"human": len(rows)}
    assert {r["source"] for r in rows} == {"human"}
    assert all(r["for_training"] and r["decided_by"].startswith("rev-") for r in rows)
    # analysis only: the automatic removal, apart and marked
    machine = read(tmp_path, manifest, "machine_labels.parquet")
    assert [(r["listing_id"], r["source"], r["for_training"], r["split"]) for r in machine] == [
        ("lst-auto", "automatic", False, None)
    ]
    assert manifest["analysis_only"]["rows"] == 1
    images = read(tmp_path, manifest, "images.parquet")
    shas = {sha for r in rows + machine for sha in r["image_sha256s"]}
    assert shas == {i["sha256"] for i in images}
    assert all(i["path"].startswith("images/") for i in images)


@pytest.mark.django_db
def test_as_of_leaves_out_later_labels_and_a_new_version_supersedes(labelled, tmp_path):
    cut = Label.objects.filter(for_training=True).order_by("decided_at")[9].decided_at
    early = export(tmp_path, cut)
    assert early["rows"] < export(tmp_path, labelled)["rows"]
    late = json.loads(
        next(
            p for p in tmp_path.glob("*/manifest.json") if p.parent.name != early["version"]
        ).read_text()
    )
    assert late["supersedes"] == early["version"]
    early_rows = read(tmp_path, early, "labels.parquet")
    assert all(r["decided_at"] <= cut for r in early_rows)
    assert "drugs" not in {r["policy"] for r in early_rows}


@pytest.mark.django_db
def test_label_issues_are_flagged(moderator, qa_lead, settings, tmp_path):
    settings.EXPORT_EASY_NEGATIVE_RATIO = 1.0
    settings.QA_HUMAN_SAMPLE_RATE = 1.0
    decide(moderator, 0.6, listing="corrected")
    sample = qa_services.qa_claim_next(user=qa_lead)
    qa_services.qa_review_record(sample=sample, user=qa_lead, outcome="correct", spec=NOT_VIOLATING)
    settings.QA_HUMAN_SAMPLE_RATE = 0.0
    decide(moderator, 0.9, listing="pos-a")
    decide(moderator, 0.9, listing="pos-b")
    decide(moderator, 0.65, NOT_VIOLATING, listing="neg-low")
    decide(moderator, 0.94, NOT_VIOLATING, listing="neg-high")
    manifest = export(tmp_path, timezone.now() + timedelta(seconds=1))
    rows = {r["listing_id"]: r for r in read(tmp_path, manifest, "labels.parquet")}
    corrected = rows["corrected"]
    assert (corrected["source"], corrected["label"], corrected["qa_disagreed"]) == (
        "qa_correction",
        0,
        True,
    )
    assert (
        corrected["supersedes"]
        == Label.objects.get(source="human", listing__external_id="corrected").label_id
    )
    assert not any(r["qa_disagreed"] for k, r in rows.items() if k != "corrected")
    # confident learning on the detection scores: the positives' mean score is 0.9, the
    # negatives' mean (1 - score) is (0.4 + 0.35 + 0.06) / 3 = 0.27: only the negative scored
    # 0.94 is confidently a positive (0.94 >= 0.9, 0.06 < 0.27)
    flagged = {k: r["likely_label_error"] for k, r in rows.items()}
    assert flagged == {
        "corrected": False,
        "neg-high": True,
        "neg-low": False,
        "pos-a": False,
        "pos-b": False,
    }
    assert manifest["flags"]["likely_label_error"] == 1
    assert manifest["flags"]["qa_disagreed"] == 1


@pytest.mark.django_db
def test_the_beat_task_exports_into_the_export_dir(labelled, tmp_path, settings):
    settings.LABEL_EXPORT_DIR = tmp_path / "nightly"
    version = export_labels_task.apply(kwargs={"as_of": labelled.isoformat()}).get()
    again = export_labels_task.apply(kwargs={"as_of": labelled.isoformat()}).get()
    assert version == again
    manifest = json.loads((tmp_path / "nightly" / version / "manifest.json").read_text())
    assert manifest["version"] == version
    assert (
        settings.CELERY_BEAT_SCHEDULE["label-export"]["task"]
        == "active_learning.export_labels_task"
    )


EMBEDDED_SCRIPT = """
from reviews.cases.intake import detections_ingest
from reviews.cases.claims import case_claim_next, case_decide
from tests.embedded_mode import embedded_env, embedded_manage
from reviews.decisions.services import DecisionSpec
from reviews.models import Case
from django.contrib.auth.models import User
from tests import factories as f
user = User.objects.get(username="mod")
for n, score in enumerate((0.6, 0.7, 0.8, 0.65)):
    detections_ingest(events=[f.event(score=score, listing=f"emb-{n}")], source="api")
    case = case_claim_next(user=user)
    spec = DecisionSpec(verdict="violation", policy="firearms", action="warn")
    case_decide(case=case, user=user, spec=spec)
"""


@pytest.mark.embedded
def test_the_command_works_in_the_embedded_mode(tmp_path):
    env = embedded_env(tmp_path / "var")
    manage = embedded_manage(env)

    manage("migrate", "--no-input", "-v", "0")
    manage("create_user", "mod", "--role", "moderator", "--password-stdin", stdin="embedded pass\n")
    manage("shell", "-c", EMBEDDED_SCRIPT)
    out = tmp_path / "exports"
    as_of = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    said = manage("export_labels", "--out", str(out), "--as-of", as_of)
    (version_dir,) = out.iterdir()
    assert said.startswith(f"label export {version_dir.name}: 4 training labels")
    first = {p.name: p.read_bytes() for p in version_dir.iterdir()}
    manage("export_labels", "--out", str(out), "--as-of", as_of)
    assert [p.name for p in out.iterdir()] == [version_dir.name]
    assert {p.name: p.read_bytes() for p in version_dir.iterdir()} == first
    manifest = json.loads(first["manifest.json"])
    assert manifest["rows"] == 4
    assert manifest["counts"]["kind"] == {"positive": 4}
    # the default export dir is under the var dir
    manage("export_labels", "--as-of", as_of)
    assert (tmp_path / "var" / "exports" / version_dir.name / "labels.parquet").read_bytes() == (
        first["labels.parquet"]
    )
