"""Seller statements and LLM answers are text from outside too. A hostile statement is stored
as sent and shown inert to appeals staff; one the database cannot hold, or with an impossible
time, is refused with a reason and kept (never a 500). An LLM verdict whose rationale and
evidence carry markup, template syntax or a NUL is recorded (the NUL escaped, the raw answer
kept) and routed like any other, and shown inert on the case page."""

import json

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from llm_verify.models import LlmVerdict
from reviews.appeals.models import Appeal, RefusedAppeal
from reviews.enforcement.models import Enforcement
from reviews.models import Case
from tests.hostile import corpus
from tests.llm_verify.conftest import Reply, llm_serving
from tests.reviews.helpers import open_cases

STATEMENT = "\n".join(corpus.INERT_TEXT.values())


def _removal(seller: str) -> Enforcement:
    (case,) = open_cases(0.97, seller=seller)
    return Enforcement.objects.get(decision__case=case, action="remove_listing")


def _appeal(enforcement: Enforcement, appeal_id: str, **fields) -> dict:
    return {
        "appeal_id": appeal_id,
        "enforcement_id": enforcement.pk,
        "seller_id": enforcement.listing.seller.external_id,
        "statement": STATEMENT,
        "submitted_at": timezone.now().isoformat(),
        **fields,
    }


def _post(client, body: dict):
    # ensure_ascii: NUL and the lone surrogate travel as \u escapes
    return client.post("/api/v1/appeals/", json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_hostile_statements_are_shown_inert_or_refused_and_kept(marketplace_client, appeals_staff):
    assert len(STATEMENT) <= 5000
    enforcement = _removal("seller-hostile")
    refused = {
        "nul": (_appeal(enforcement, "ap-nul", statement=corpus.NUL), "statement"),
        "surrogate": (
            _appeal(enforcement, "ap-surrogate", statement=corpus.LONE_SURROGATE),
            "statement",
        ),
        "too_long": (_appeal(enforcement, "ap-long", statement="z" * 5001), "statement"),
        "no_such_minute": (
            _appeal(enforcement, "ap-minute", submitted_at="2026-01-01T10:60:00+00:00"),
            "submitted_at",
        ),
        "no_such_day": (
            _appeal(enforcement, "ap-day", submitted_at="2026-02-30T10:00:00+00:00"),
            "submitted_at",
        ),
    }
    for name, (body, field) in refused.items():
        response = _post(marketplace_client, body)
        assert response.status_code == 422, (name, response.content[:300])
        error = response.json()["error"]
        assert (error["code"], list(error["details"])) == ("invalid", [field]), name
    kept = {r.appeal_id: r for r in RefusedAppeal.objects.all()}
    assert sorted(kept) == sorted(body["appeal_id"] for body, _ in refused.values())
    for body, _ in refused.values():
        # what was sent, readable: the NUL and the surrogate as JSON escapes
        assert json.loads(kept[body["appeal_id"]].payload) == body

    response = _post(marketplace_client, _appeal(enforcement, "ap-hostile"))
    assert response.status_code == 201, response.content[:300]
    appeal = Appeal.objects.get(appeal_id="ap-hostile")
    assert appeal.statement == STATEMENT  # stored as sent
    client = Client()
    client.force_login(appeals_staff)
    page = client.get(f"/appeals/{appeal.pk}/")
    assert page.status_code == 200
    assert "script-src 'self'" in page["Content-Security-Policy"]
    html = page.content.decode()
    for markup in corpus.MARKUP:
        assert markup not in html, markup
    statement = corpus.shown(html, r'id="seller-statement">.*?<pre[^>]*>(.*?)</pre>')
    assert statement == escape(STATEMENT)


def _verdict(rationale: str, note: str, quote: str) -> dict:
    return {
        "decision": "violation",
        "policy": "firearms",
        "confidence": 0.9,
        "rationale": rationale,
        "evidence": [{"kind": "listing_text", "quote": quote, "note": note}],
        "recommended_action": "remove",
    }


@pytest.mark.django_db
def test_hostile_llm_output_is_recorded_and_shown_inert(
    settings, eager_celery, django_capture_on_commit_callbacks, moderator
):
    title = "Pistol " + corpus.SCRIPT
    rationale = f"{corpus.SCRIPT} {corpus.DJANGO_VAR} {corpus.RLO} {corpus.ZERO_WIDTH}"[:300]
    replies = {
        "markup": _verdict(rationale, corpus.IMG_ONERROR, "Pistol"),
        "nul": _verdict("sold\x00 for cash " + corpus.SCRIPT, "note\x00", "Pistol"),
    }
    client = Client()
    client.force_login(moderator)
    with llm_serving(settings, LLM_BREAKER_FAILURES=50) as server:
        for name, verdict in replies.items():
            server.script(Reply.content(verdict))
            with django_capture_on_commit_callbacks(execute=True):
                (case,) = open_cases(0.8, title=title, description=corpus.STYLE)
            case.refresh_from_db()
            stored = LlmVerdict.objects.get(id=case.llm_verdict_id)
            assert stored.raw_response, name  # the model's answer is kept as it came
            assert (stored.status, case.llm_state) == ("ok", "done"), name
            page = client.get(f"/cases/{case.id}/")
            assert page.status_code == 200, name
            html = page.content.decode()
            for markup in corpus.MARKUP:
                assert markup not in html, (name, markup)
            assert corpus.shown(html, r'<p class="rationale">(.*?)</p>') == escape(
                stored.rationale
            ), name
            if name == "nul":
                assert "\x00" not in stored.rationale + json.dumps(stored.evidence)
                assert stored.rationale.startswith("sold\\u0000 for cash")
            else:
                assert stored.rationale == rationale
    assert Case.objects.count() == 2
