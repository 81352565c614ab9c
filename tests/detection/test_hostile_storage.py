"""Events that validation may let through but the database cannot take, or that fail at storage
time for any reason: the rest of their batch is accepted, and each failure is a dead letter that
is stored, readable and replayable. For every batch: events in = accepted + duplicates + dead
letters. On PostgreSQL, through the REST endpoint, the Celery worker and the replay command."""

import base64
import io
import json

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client

from detection.intake.dead_letters import dead_letter_payload
from detection.intake.storage import is_transient
from detection.models import DeadLetter, DetectionEvent, Listing
from reviews.cases import intake
from reviews.cases.intake import ingest_events_task
from reviews.models import Case
from reviews.policies.models import LadderVersion
from tests import factories as f
from tests.detection.conftest import wait_for

URL = "/api/v1/detections/"
NUL = "the value contains a NUL character (U+0000), which cannot be stored"


def post(client, body):
    data = (
        body if isinstance(body, bytes) else json.dumps(body)
    )  # ensure_ascii: NUL travels as \u0000
    return client.post(URL, data=data, content_type="application/json")


def unstorable(field: str, message: str = NUL) -> dict:
    return {"field": field, "code": "unstorable_text", "message": message}


def hostile_batch() -> tuple[list[dict], list[list[dict] | None]]:
    """A batch of valid events and hostile ones, with the reasons each hostile one must get."""
    batch = [
        f.event(listing="good-1"),
        f.event(title="Pistol\x00 for sale"),
        f.event(reason_codes=["weapon\x00keyword"]),
        f.event(images=[f.inline_image("img\x00-1")]),
        f.event(description="cash \ud800 only"),
        f.event(scores={"fire\x00arms": 0.9}),
        f.event(event_id="ev\x00-nul-id", trace_id="tr\udc00"),
        f.event(listing="good-2"),
    ]
    reasons = [
        None,
        [unstorable("listing.title")],
        [unstorable("detection.reason_codes[0]")],
        [
            unstorable("listing.images[0].id"),
            {
                "field": "listing.images[0].id",
                "code": "bad_format",
                "message": "'img\\x00-1' does not match '^[A-Za-z0-9._:\\\\-]+$'",
            },
        ],
        [
            unstorable(
                "listing.description",
                "the value contains a lone surrogate (U+D800), which cannot be stored",
            )
        ],
        [
            {
                "field": "detection.scores.fire\\u0000arms",
                "code": "unstorable_text",
                "message": "the key contains a NUL character (U+0000), which cannot be stored",
            },
            {
                "field": "detection.scores",
                "code": "unknown_policy",
                "message": "unknown policy code 'fire\\x00arms'",
            },
        ],
        [
            unstorable("event_id"),
            unstorable(
                "trace_id", "the value contains a lone surrogate (U+DC00), which cannot be stored"
            ),
            {
                "field": "event_id",
                "code": "bad_format",
                "message": "'ev\\x00-nul-id' does not match '^[A-Za-z0-9._:\\\\-]+$'",
            },
            {
                "field": "trace_id",
                "code": "bad_format",
                "message": "'tr\\udc00' does not match '^[A-Za-z0-9._:\\\\-]+$'",
            },
        ],
        None,
    ]
    return batch, reasons


def assert_kept_exactly(batch: list[dict], expected_reasons: list) -> None:
    """Each hostile event is one dead letter, with its reasons, that reads back as what was sent."""
    hostile = [
        (ev, why) for ev, why in zip(batch, expected_reasons, strict=True) if why is not None
    ]
    letters = list(DeadLetter.objects.order_by("id"))
    assert len(letters) == len(hostile)
    for letter, (ev, why) in zip(letters, hostile, strict=True):
        assert letter.reasons == why
        assert letter.payload_encoding == "json"
        assert dead_letter_payload(letter) == ev  # NUL and surrogates included, not a lossy copy
    assert letters[-1].event_id == "ev\\u0000-nul-id"
    assert letters[-1].trace_id == "tr\\udc00"


def assert_replayed_as_rejected_again(expected_reasons: list) -> None:
    """Replay reads the stored form back exactly: the events are still bad, for the same reasons."""
    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    hostile = [why for why in expected_reasons if why is not None]
    assert out.getvalue().endswith(
        f"replayed {len(hostile)}: 0 accepted, 0 duplicate, {len(hostile)} rejected again\n"
    )
    letters = list(DeadLetter.objects.order_by("id"))
    assert [letter.state for letter in letters] == ["rejected_again"] * len(hostile)
    assert [letter.last_replay_result["reasons"] for letter in letters] == hostile


@pytest.mark.django_db
def test_unstorable_text_over_rest_keeps_the_rest_of_the_batch(tier_client):
    batch, expected_reasons = hostile_batch()
    response = post(tier_client, batch)
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted"] + ["rejected"] * 6 + ["accepted"]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 0, 6)
    assert [r.get("reasons") for r in body["results"]] == expected_reasons
    assert body["results"][6]["event_id"] == "ev\\u0000-nul-id"
    assert sorted(Case.objects.values_list("listing__external_id", flat=True)) == [
        "good-1",
        "good-2",
    ]
    assert DetectionEvent.objects.count() == 2
    assert_kept_exactly(batch, expected_reasons)
    assert [r["dead_letter_id"] for r in body["results"][1:7]] == list(
        DeadLetter.objects.order_by("id").values_list("id", flat=True)
    )
    assert_replayed_as_rejected_again(expected_reasons)


@pytest.mark.celery_worker
@pytest.mark.skipif(
    not settings.REDIS_URL, reason="needs REDIS_URL: the suite runs against the real Redis"
)
def test_unstorable_text_through_a_real_worker_keeps_the_rest_of_the_batch(celery_worker_process):
    batch, expected_reasons = hostile_batch()
    ingest_events_task.apply_async(args=[batch], queue="ingest")
    assert wait_for(lambda: DeadLetter.objects.count() == 6 and Case.objects.count() == 2), (
        celery_worker_process.read_text()[-3000:]
    )
    log = celery_worker_process.read_text()
    assert "ingest batch of 8: {'accepted': 2, 'duplicate': 0, 'rejected': 6}" in log
    assert "Traceback" not in log
    assert sorted(Case.objects.values_list("listing__external_id", flat=True)) == [
        "good-1",
        "good-2",
    ]
    assert_kept_exactly(batch, expected_reasons)
    assert set(DeadLetter.objects.values_list("source", flat=True)) == {"celery"}
    assert_replayed_as_rejected_again(expected_reasons)


def _refuse_listing(monkeypatch, listing_id: str) -> None:
    """Case opening fails for one listing, as a bug or a broken row in a higher layer would."""
    real = intake.cases_open_for_events

    def opener(*, events):
        for row in events:
            if row.listing.external_id == listing_id:
                raise RuntimeError(f"opening refused for {listing_id}")
        return real(events=events)

    monkeypatch.setattr(intake, "cases_open_for_events", opener)


@pytest.mark.django_db
def test_one_event_failing_at_storage_is_kept_alone_and_replayed_once_fixed(
    tier_client, monkeypatch
):
    _refuse_listing(monkeypatch, "doomed")
    batch = [f.event(listing="first"), f.event(listing="doomed"), f.event(listing="last")]
    body = post(tier_client, batch).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["reasons"] == [
        {
            "field": "$",
            "code": "storage_failed",
            "message": "could not be stored: RuntimeError: opening refused for doomed",
        }
    ]
    # The event and its listing went with the case that could not be opened: nothing half-stored.
    assert not Listing.objects.filter(external_id="doomed").exists()
    assert sorted(DetectionEvent.objects.values_list("listing__external_id", flat=True)) == [
        "first",
        "last",
    ]
    assert sorted(Case.objects.values_list("listing__external_id", flat=True)) == ["first", "last"]
    letter = DeadLetter.objects.get()
    assert (letter.id, letter.event_id, letter.payload_encoding) == (
        body["results"][1]["dead_letter_id"],
        batch[1]["event_id"],
        "json",
    )
    assert dead_letter_payload(letter) == batch[1]

    monkeypatch.undo()
    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    assert out.getvalue() == "replayed 1: 1 accepted, 0 duplicate, 0 rejected again\n"
    assert (
        Case.objects.get(detection_event__event_id=batch[1]["event_id"]).listing.external_id
        == "doomed"
    )
    letter.refresh_from_db()
    assert (letter.state, letter.last_replay_result["status"]) == ("replayed", "accepted")


@pytest.mark.django_db
def test_a_value_the_database_refuses_fails_its_event_alone(settings, eager_celery):
    # A limit configured above the column's width lets validation pass what PostgreSQL refuses.
    settings.INGEST_MAX_TITLE_CHARS = 2000
    batch = [
        f.event(listing="ok-1"),
        f.event(listing="too-wide", title="x" * 1001),
        f.event(listing="ok-2"),
    ]
    counts = ingest_events_task.delay(batch).get()
    assert counts == {"accepted": 2, "duplicate": 0, "rejected": 1}
    letter = DeadLetter.objects.get()
    assert letter.reasons == [
        {
            "field": "$",
            "code": "storage_failed",
            "message": "could not be stored: DataError: "
            "value too long for type character varying(1000)",
        }
    ]
    assert (letter.event_id, letter.source) == (batch[1]["event_id"], "celery")
    assert sorted(Case.objects.values_list("listing__external_id", flat=True)) == ["ok-1", "ok-2"]


@pytest.mark.django_db
def test_when_no_case_can_be_opened_every_event_is_kept(tier_client):
    already = f.event(listing="already")
    assert post(tier_client, [already]).json()["accepted"] == 1
    LadderVersion.objects.update(is_active=False)
    a, b = f.event(listing="a"), f.event(listing="b")
    batch = [already, a, dict(a), b, f.mutate(f.event(), "detection.scores", {"firearms": 3})]
    body = post(tier_client, batch).json()
    assert [r["status"] for r in body["results"]] == [
        "duplicate",
        "rejected",
        "duplicate",
        "rejected",
        "rejected",
    ]
    failed = {
        "field": "$",
        "code": "storage_failed",
        "message": "could not be stored: DoesNotExist: "
        "no active ladder version; run the migrations",
    }
    assert [r.get("reasons") for r in body["results"][:4]] == [None, [failed], None, [failed]]
    # events in = accepted + duplicates + dead letters
    assert (
        len(batch) == body["accepted"] + body["duplicate"] + DeadLetter.objects.count() == 0 + 2 + 3
    )
    assert set(DeadLetter.objects.values_list("event_id", flat=True)) == {
        a["event_id"],
        b["event_id"],
        batch[4]["event_id"],
    }
    assert list(DetectionEvent.objects.values_list("listing__external_id", flat=True)) == [
        "already"
    ]
    assert Case.objects.count() == 1


@pytest.mark.django_db
def test_a_transient_failure_answers_503_and_keeps_nothing_half_done(tier_client, monkeypatch):
    calls = []

    def opener(*, events):
        calls.append(len(events))
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(intake, "cases_open_for_events", opener)
    response = post(tier_client, [f.event(), f.event()])
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "storage_unavailable",
            "message": "The database is unavailable; send the batch again.",
        }
    }
    assert response["Retry-After"] == "5"
    assert calls == [2, 2, 2]  # the batch was tried again, as a whole, and never split
    assert (DetectionEvent.objects.count(), DeadLetter.objects.count(), Case.objects.count()) == (
        0,
        0,
        0,
    )


def test_only_errors_a_retry_can_cure_are_transient():
    import psycopg.errors

    def wrapped(cause):
        exc = OperationalError(str(cause))
        exc.__cause__ = cause
        return exc

    assert is_transient(wrapped(psycopg.errors.DeadlockDetected()))
    assert is_transient(wrapped(psycopg.errors.SerializationFailure()))
    assert is_transient(wrapped(psycopg.OperationalError("connection lost")))
    assert not is_transient(
        wrapped(psycopg.errors.ProgramLimitExceeded())
    )  # an oversized index row, every time
    assert not is_transient(psycopg.errors.UniqueViolation())
    assert not is_transient(RuntimeError("bug"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            b'[{"event_id": "x\x00y", "title": "\xff\xfe"}]',
            "'utf-8' codec can't decode byte 0xff in position 31: invalid start byte",
        ),
        (b'[{"event_id": "x\x00y"}]', "Invalid control character at: line 1 column 17 (char 16)"),
    ],
    ids=["invalid-utf8", "raw-nul-byte"],
)
def test_a_raw_body_that_is_not_storable_text_is_kept_as_base64_and_shown(tier_client, body, why):
    response = post(tier_client, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (
        "unparseable_json",
        f"the body is not valid JSON: {why}",
    )
    letter = DeadLetter.objects.get(id=error["details"]["dead_letter_id"])
    assert (letter.payload_encoding, letter.payload) == ("base64", base64.b64encode(body).decode())
    assert dead_letter_payload(letter) == body

    User.objects.create_superuser("root", password="correct horse battery staple")
    admin = Client()
    admin.login(username="root", password="correct horse battery staple")
    page = admin.get(f"/admin/detection/deadletter/{letter.id}/change/")
    assert page.status_code == 200
    assert letter.payload.encode() in page.content
    assert b"base64 of received bytes" in page.content

    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    assert out.getvalue().endswith("replayed 1: 0 accepted, 0 duplicate, 1 rejected again\n")
    letter.refresh_from_db()
    assert [r["code"] for r in letter.last_replay_result["reasons"]] == ["unparseable_json"]
