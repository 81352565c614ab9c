import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from detection.models import DeadLetter, DetectionEvent, ServiceToken
from reviews.cases.intake import detections_ingest
from reviews.models import Case
from tests import factories as f


@pytest.mark.django_db
def test_create_service_token_prints_a_token_and_stores_only_its_hash(tier_client):
    token = ServiceToken.objects.get(name="detection-tier")
    assert token.key_hash
    assert len(token.key_hash) == 64
    assert tier_client.post("/api/v1/detections/", [f.event()], format="json").status_code == 200
    with pytest.raises(CommandError, match="exists"):
        call_command("create_service_token", "detection-tier", stdout=io.StringIO())
    out = io.StringIO()
    call_command("create_service_token", "detection-tier", "--rotate", stdout=out)
    assert tier_client.post("/api/v1/detections/", [f.event()], format="json").status_code == 401


@pytest.mark.django_db
def test_create_user_reads_the_password_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase 42\n"))
    call_command(
        "create_user", "newmod", "--role", "moderator", "--password-stdin", stdout=io.StringIO()
    )
    user = User.objects.get(username="newmod")
    assert user.check_password("a long enough passphrase 42")
    assert list(user.groups.values_list("name", flat=True)) == ["moderator"]
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    with pytest.raises(CommandError):
        call_command(
            "create_user", "weak", "--role", "moderator", "--password-stdin", stdout=io.StringIO()
        )
    assert not User.objects.filter(username="weak").exists()


@pytest.mark.django_db
def test_replay_dead_letters_after_the_cause_is_fixed(settings):
    url_image = [{"id": "a", "url": "https://cdn.partner.example/a.jpg", "sha256": "0" * 64}]
    fixable = f.event(images=url_image)
    hopeless = f.mutate(f.event(), "detection.scores", {"firearms": 9})
    outcomes = detections_ingest(events=[fixable, hopeless], source="celery")
    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    assert DeadLetter.objects.filter(state="pending").count() == 2

    settings.IMAGE_HOST_ALLOWLIST = ["images.marketplace.example", "cdn.partner.example"]
    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    assert "replayed 2: 1 accepted, 0 duplicate, 1 rejected again" in out.getvalue()
    assert Case.objects.filter(detection_event__event_id=fixable["event_id"]).exists()
    letters = {
        json.loads(letter.payload)["event_id"]: letter for letter in DeadLetter.objects.all()
    }
    assert letters[fixable["event_id"]].state == "replayed"
    assert letters[hopeless["event_id"]].state == "rejected_again"
    assert letters[hopeless["event_id"]].last_replay_result["reasons"][0]["code"] == "out_of_range"
    assert DeadLetter.objects.count() == 2  # a replay does not multiply letters
    # replaying again does nothing new: pending ones only by default
    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    assert "replayed 0" in out.getvalue()


@pytest.mark.django_db
def test_simulate_detection_tier_through_the_celery_path(eager_celery):
    out = io.StringIO()
    call_command(
        "simulate_detection_tier",
        "--count",
        "120",
        "--seed",
        "7",
        "--malformed-ratio",
        "0.1",
        stdout=out,
    )
    assert "published 120 events" in out.getvalue()
    events, letters = DetectionEvent.objects.count(), DeadLetter.objects.count()
    duplicates = 120 - events - letters
    assert letters >= 5, (events, letters)
    assert duplicates >= 1, (events, letters)
    assert Case.objects.count() == events
    titles = " ".join(DetectionEvent.objects.values_list("listing__title", flat=True))
    languages = set(DetectionEvent.objects.values_list("listing__language", flat=True))
    assert len(languages) >= 3
    assert any(
        word in titles.lower() for word in ["water gun", "airsoft", "nerf", "holster", "nail gun"]
    )
    routes = set(Case.objects.values_list("route", flat=True))
    assert {"auto_action", "human_review", "llm_verify", "monitor"} <= routes
    reasons = {r["code"] for letter in DeadLetter.objects.all() for r in letter.reasons}
    assert len(reasons) >= 3


def test_simulator_is_deterministic_and_obfuscates():
    import random

    from detection.intake.simulator import DetectionTierSimulator, obfuscate

    a = DetectionTierSimulator(seed=3).batch(20)
    b = DetectionTierSimulator(seed=3).batch(20)
    assert [e["listing"]["title"] for e in a] == [e["listing"]["title"] for e in b]
    rng = random.Random(1)
    forms = {obfuscate("gun", rng) for _ in range(60)}
    assert {"gun", "G.U.N", "g u n"} <= forms
    assert any("*" in x for x in forms)
    assert "p1570l" in {obfuscate("pistol", random.Random(s)) for s in range(40)}
