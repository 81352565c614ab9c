"""Hostile listings from the detection tier, over the REST endpoint on PostgreSQL: text that
tries to run script, restyle the page or be evaluated as a template is stored as it came and
shown inert on the moderator's pages; text the database cannot hold, images that are not
images, decompression bombs and image URLs that point anywhere but the allow-list are refused
with a reason, kept as dead letters and replayable; no such URL is ever contacted."""

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils.html import escape

from detection.intake.dead_letters import dead_letter_payload
from detection.models import DeadLetter
from reviews.models import Case
from tests import factories as f
from tests.hostile import corpus

URL = "/api/v1/detections/"


def _text_events() -> dict[str, dict]:
    events = {}
    for name, text in corpus.INERT_TEXT.items():
        events[f"text:{name}"] = f.event(
            listing=f"hostile-{name}",
            title=text[:300],
            description=text,
            reason_codes=[text[:64]],
        )
    events["text:astral_at_the_limit"] = f.event(title="\U0001f52b" * 300)
    return events


def _refused_events(port: int) -> dict[str, tuple[dict, str]]:
    """name -> (event, the reason code it must be refused with)."""
    refused = {
        f"unstorable:{name}": (f.event(title=text), "unstorable_text")
        for name, text in corpus.UNSTORABLE_TEXT.items()
    }
    refused["too_long:title"] = (f.event(title="x" * 301), "too_long")
    refused["too_long:astral_title"] = (f.event(title="\U0001f52b" * 301), "too_long")
    refused["too_long:description"] = (f.event(description="y" * 10_001), "too_long")
    for name, (data, code) in corpus.BAD_IMAGES.items():
        refused[f"image:{name}"] = (f.event(images=[corpus.inline("img-1", data)]), code)
    for name, (data, code) in corpus.BAD_BASE64.items():
        image = {"id": "img-1", "data": data, "sha256": "0" * 64}
        refused[f"base64:{name}"] = (f.event(images=[image]), code)
    for name, (url, code) in corpus.ssrf_urls(port).items():
        image = {"id": "img-1", "url": url, "sha256": "0" * 64}
        refused[f"url:{name}"] = (f.event(images=[image]), code)
    return refused


@pytest.mark.django_db
def test_hostile_listings_are_kept_inert_or_refused_and_kept(tier_client, moderator, trap):
    port, requests_seen = trap
    shown = _text_events()
    refused = _refused_events(port)
    batch = list(shown.values()) + [event for event, _ in refused.values()]

    # ensure_ascii: NUL and the lone surrogate travel as \u escapes, as a JSON encoder sends them
    response = tier_client.post(URL, json.dumps(batch), content_type="application/json")

    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (
        len(shown),
        0,
        len(refused),
    )
    results = body["results"]
    names = list(shown) + list(refused)
    outcome = dict(zip(names, results, strict=True))
    for name in shown:
        assert outcome[name]["status"] == "accepted", (name, outcome[name])
    for name, (_, code) in refused.items():
        assert outcome[name]["status"] == "rejected", (name, outcome[name])
        assert code in {r["code"] for r in outcome[name]["reasons"]}, (name, outcome[name])
    # no URL off the allow-list was contacted, at validation or after it
    assert requests_seen == []

    # nothing lost: each refusal is a dead letter holding exactly what was sent, and replays
    letters = {letter.id: letter for letter in DeadLetter.objects.all()}
    assert len(letters) == len(refused)
    for name, (event, _) in refused.items():
        assert dead_letter_payload(letters[outcome[name]["dead_letter_id"]]) == event, name
    out = io.StringIO()
    call_command("replay_dead_letters", stdout=out)
    assert out.getvalue().endswith(
        f"replayed {len(refused)}: 0 accepted, 0 duplicate, {len(refused)} rejected again\n"
    )
    assert requests_seen == []

    # shown inert: every page a moderator opens shows the text as text
    client = Client()
    client.force_login(moderator)
    for name, event in shown.items():
        case = Case.objects.get(detection_event__event_id=event["event_id"])
        page = client.get(f"/cases/{case.id}/")
        assert page.status_code == 200, name
        assert "script-src 'self'" in page["Content-Security-Policy"]
        html = page.content.decode()
        for markup in corpus.MARKUP:
            assert markup not in html, (name, markup)
        # the title and description are there, escaped (template syntax is not evaluated),
        # invisible characters shown as markers
        title = corpus.shown(html, r'id="listing-title">(.*?)</h3>')
        description = corpus.shown(html, r'id="listing-description">(.*?)</pre>')
        assert title == escape(event["listing"]["title"]), name
        assert description == escape(event["listing"]["description"]), name
    queue = client.get("/queues/")
    assert queue.status_code == 200
    for markup in corpus.MARKUP:
        assert markup not in queue.content.decode()
