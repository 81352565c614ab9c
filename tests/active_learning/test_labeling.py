"""The daily labeling draw and the labeling queue on PostgreSQL: the pool (monitor and random
sample events), strategies and inclusion probabilities recorded, the budget, one draw a day,
the command and the task; claiming and answering under the lease through the API, label only
(no decision, no enforcement); outsiders refused."""

from datetime import date
from io import StringIO

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client

from active_learning.labeling.models import LabelingDraw, LabelingItem
from active_learning.labeling.sampling import day_seed, labeling_draw, split_across_policies
from active_learning.labeling.selectors import labeling_figures
from active_learning.labels.models import Label
from active_learning.ml.strategies import STRATEGIES
from active_learning.tasks import sample_for_labeling_task
from detection.models import ImageEmbedding, ListingImage, ReferenceItem
from moderation_portal.core.models import AuditEvent
from reviews.cases.claims import case_claim_next, case_decide
from reviews.cases.models import Queue
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec
from reviews.enforcement.models import Enforcement
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases

DAY = date(2026, 3, 2)


def pool(*scores, **kw):
    """Monitor cases (score in [monitor, review) of the default ladder), closed, no decision."""
    cases = open_cases(*scores, **kw)
    assert {c.route for c in cases} == {"monitor"}
    return cases


def embed(case, vector, version="img-v1"):
    image = ListingImage.objects.get(listing=case.listing)
    vec = np.asarray(vector, dtype=np.float32)
    ImageEmbedding.objects.create(
        image=image,
        model_version=version,
        source="local",
        vector=(vec / np.linalg.norm(vec)).tobytes(),
    )


def basis(i, dim=8):
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def drawn_cases(draw):
    return set(draw.items.values_list("case_id", flat=True))


@pytest.mark.django_db
def test_the_draw_takes_the_monitor_pool_and_the_sample_events_only():
    monitor = pool(0.45, 0.35)
    (sample,) = open_cases(0.1, sample=True)
    (allowed,) = open_cases(0.1)  # allow, not a sample: not in the pool
    open_cases(0.6)  # waits for a person
    (removed,) = open_cases(0.97)  # automatic decision
    assert (sample.route, allowed.route, removed.route) == ("allow", "allow", "auto_action")

    draw = labeling_draw(day=DAY, budget=10)

    assert drawn_cases(draw) == {monitor[0].id, monitor[1].id, sample.id}
    assert draw.pool_size == 3
    assert draw.budget == 10
    assert draw.shares == django_settings.LABELING_STRATEGY_SHARES
    assert sum(draw.counts.values()) == 3
    for item in draw.items.select_related("case"):
        assert item.strategy in STRATEGIES
        assert 0 < item.inclusion_probability <= 1
        assert item.policy == "firearms"
        assert item.threshold == 0.5  # the active ladder's `review`
        assert item.score == item.case.score
        assert item.state == "pending"
    assert sorted(draw.items.values_list("rank", flat=True)) == [1, 2, 3]


@pytest.mark.django_db
def test_the_budget_is_respected_and_split_evenly_across_policies(settings):
    settings.LABELING_STRATEGY_SHARES = {"uncertainty": 0.5, "random": 0.5}
    pool(0.31, 0.33, 0.36, 0.39, 0.42, 0.45, policy="firearms")
    pool(0.32, 0.4, policy="drugs")
    draw = labeling_draw(day=DAY, budget=5)
    per_policy = {p: draw.items.filter(policy=p).count() for p in ("firearms", "drugs")}
    assert per_policy == {"firearms": 3, "drugs": 2}
    assert draw.counts == {"random": 2, "uncertainty": 3}
    # Each policy has its own random control, its inclusion probability k / N over what the
    # uncertainty picks left.
    randoms = list(
        draw.items.filter(strategy="random").values_list("policy", "inclusion_probability")
    )
    assert sorted(randoms) == [("drugs", 1.0), ("firearms", pytest.approx(1 / 4))]
    # the uncertainty picks are the scores nearest the threshold (0.5)
    assert draw.items.get(policy="firearms", strategy="uncertainty", score=0.45)


def test_the_split_across_policies_fills_from_the_small_ones():
    assert split_across_policies(10, {"firearms": 2, "drugs": 20, "scam": 20}) == {
        "firearms": 2,
        "drugs": 4,
        "scam": 4,
    }
    assert split_across_policies(5, {"scam": 1}) == {"scam": 1}
    assert split_across_policies(3, {"drugs": 5, "firearms": 5}) == {"firearms": 2, "drugs": 1}
    assert split_across_policies(0, {"drugs": 5}) == {"drugs": 0}


@pytest.mark.django_db
def test_drawing_twice_the_same_day_adds_nothing():
    pool(0.35, 0.4, 0.45)
    first = labeling_draw(day=DAY, budget=2)
    items = drawn_cases(first)
    assert len(items) == 2
    pool(0.44)  # new work after the draw
    again = labeling_draw(day=DAY, budget=50)
    assert again.pk == first.pk
    assert drawn_cases(again) == items
    assert LabelingItem.objects.count() == 2
    assert LabelingDraw.objects.count() == 1
    assert AuditEvent.objects.filter(action="labeling_drawn").count() == 1  # drawn once
    # the next day draws what is left, never an item drawn before
    tomorrow = labeling_draw(day=date(2026, 3, 3), budget=50)
    assert len(drawn_cases(tomorrow)) == 2
    assert drawn_cases(tomorrow).isdisjoint(items)
    assert min(tomorrow.items.values_list("rank", flat=True)) > max(
        first.items.values_list("rank", flat=True)
    )


@pytest.mark.django_db
def test_the_same_day_draws_the_same_items(settings):
    settings.LABELING_STRATEGY_SHARES = {"random": 1.0}
    pool(*[0.3 + i * 0.01 for i in range(12)])
    first = labeling_draw(day=DAY, budget=4)
    picked = drawn_cases(first)
    assert [i.inclusion_probability for i in first.items.all()] == [pytest.approx(4 / 12)] * 4
    LabelingItem.objects.all().delete()
    LabelingDraw.objects.all().delete()
    assert drawn_cases(labeling_draw(day=DAY, budget=4)) == picked
    assert day_seed(DAY) == day_seed(date(2026, 3, 2)) != day_seed(date(2026, 3, 3))


@pytest.mark.django_db
def test_hard_negatives_are_near_cleared_listings_and_confirmed_violations(settings, moderator):
    settings.LABELING_STRATEGY_SHARES = {"hard_negative": 1.0}
    # a listing a person cleared at a high score
    (flagged,) = open_cases(0.8)
    claimed = case_claim_next(user=moderator)
    assert claimed.id == flagged.id
    case_decide(
        case=claimed,
        user=moderator,
        spec=DecisionSpec(verdict="no_violation", policy=None, action="none", notes=""),
    )
    embed(flagged, basis(0))
    # a confirmed violation in the neighbour space: [sqrt(1-w) image, sqrt(w) text]
    violation = np.concatenate([np.sqrt(0.5) * basis(1), np.sqrt(0.5) * basis(0, 4)])
    ReferenceItem.objects.create(
        source="import",
        policy="firearms",
        bank_ref="bank-1",
        model_version="img-v1|minilm-l6|text=0.50",
        vector=violation.astype(np.float32).tobytes(),
    )
    near_cleared, near_violation, far1, far2 = pool(0.35, 0.36, 0.37, 0.38)
    embed(near_cleared, basis(0) + 0.1 * basis(7))
    embed(near_violation, basis(1) + 0.1 * basis(7))
    embed(far1, basis(3))
    embed(far2, basis(4))

    draw = labeling_draw(day=DAY, budget=2)

    assert drawn_cases(draw) == {near_cleared.id, near_violation.id}
    assert set(draw.items.values_list("strategy", "inclusion_probability")) == {
        ("hard_negative", 1.0)
    }


@pytest.mark.django_db
def test_the_command_and_the_task_draw_once_a_day(settings):
    pool(0.35, 0.4, 0.45)
    out = StringIO()
    call_command("sample_for_labeling", "--budget", "2", "--day", "2026-03-02", stdout=out)
    assert out.getvalue().startswith("labeling draw 2026-03-02: 2 items (budget 2, pool 3)")
    out = StringIO()
    call_command("sample_for_labeling", "--budget", "3", "--day", "2026-03-02", stdout=out)
    assert out.getvalue().startswith("labeling draw 2026-03-02: 2 items (budget 2, pool 3)")
    draw_id = sample_for_labeling_task.apply(kwargs={"day": "2026-03-03", "budget": 5}).get()
    draw = LabelingDraw.objects.get(pk=draw_id)
    assert (draw.day, draw.items.count()) == (date(2026, 3, 3), 1)
    assert sample_for_labeling_task.apply(kwargs={"day": "2026-03-03"}).get() == draw_id
    beat = settings.CELERY_BEAT_SCHEDULE["labeling-draw"]
    assert beat["task"] == "active_learning.sample_for_labeling_task"
    assert beat["schedule"].hour == {settings.LABELING_DRAW_HOUR}
    assert beat["schedule"].minute == {0}


@pytest.mark.django_db
def test_the_labeling_queue_row_exists():
    queue = Queue.objects.get(slug="labeling")
    assert (queue.kind, queue.roles) == ("labeling", ["moderator"])


@pytest.mark.django_db
def test_claim_and_answer_under_the_lease_label_only(moderator, moderator2):
    pool(0.35, 0.45)
    labeling_draw(day=DAY, budget=5)
    decisions, enforcements = Decision.objects.count(), Enforcement.objects.count()
    ana, ben = api_client_for(moderator), api_client_for(moderator2)

    claimed = ana.post("/api/v1/labeling/claim-next/")
    assert claimed.status_code == 200
    body = claimed.json()
    item = LabelingItem.objects.get(pk=body["id"])
    assert set(body) == {"id", "policy", "state", "lease_expires_at", "answer", "listing"}
    assert (body["policy"], body["state"], body["answer"]) == ("firearms", "claimed", None)
    assert body["listing"]["id"] == item.case.listing.external_id
    assert len(body["listing"]["images"]) == 1
    # the same moderator gets the same item again; the other one the next
    assert ana.post("/api/v1/labeling/claim-next/").json()["id"] == item.pk
    other = ben.post("/api/v1/labeling/claim-next/").json()["id"]
    assert other != item.pk

    refused = ben.post(
        f"/api/v1/labeling/{item.pk}/answer/", {"answer": "violation"}, format="json"
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "lease_not_held"
    bad = ana.post(f"/api/v1/labeling/{item.pk}/answer/", {"answer": "remove"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid"
    missing = ana.post("/api/v1/labeling/987654321/answer/", {"answer": "unsure"}, format="json")
    assert missing.status_code == 404

    answered = ana.post(
        f"/api/v1/labeling/{item.pk}/answer/", {"answer": "violation"}, format="json"
    )
    assert answered.status_code == 200
    assert (answered.json()["state"], answered.json()["answer"]) == ("answered", "violation")
    item.refresh_from_db()
    assert (item.state, item.answer, item.answered_by, item.lease_expires_at) == (
        "answered",
        "violation",
        moderator,
        None,
    )
    assert item.time_on_item_ms is not None
    label = Label.objects.get(labeling_item=item)
    assert (label.label, label.source, label.sampling_strategy) == (1, "labeling", item.strategy)
    answered_audit = AuditEvent.objects.get(action="labeling_answered", object_id=str(item.pk))
    assert (answered_audit.actor, answered_audit.data["label_id"]) == (moderator, label.label_id)
    assert AuditEvent.objects.filter(
        action="labeling_claimed", object_id=str(item.pk), actor=moderator
    ).exists()
    # answering again is refused: the lease ended with the answer
    again = ana.post(f"/api/v1/labeling/{item.pk}/answer/", {"answer": "unsure"}, format="json")
    assert again.status_code == 409
    assert ana.post("/api/v1/labeling/claim-next/").status_code == 204
    assert (Decision.objects.count(), Enforcement.objects.count()) == (decisions, enforcements)


@pytest.mark.django_db
def test_an_outsider_and_other_roles_are_refused(outsider, appeals_staff, qa_lead):
    pool(0.35)
    draw = labeling_draw(day=DAY, budget=1)
    item = draw.items.get()
    for user in (outsider, appeals_staff, qa_lead):
        api = api_client_for(user)
        assert api.post("/api/v1/labeling/claim-next/").status_code == 403
        answer = api.post(
            f"/api/v1/labeling/{item.pk}/answer/", {"answer": "violation"}, format="json"
        )
        assert answer.status_code == 403
        page = Client()
        page.force_login(user)
        assert page.get("/labeling/").status_code == 403
        assert page.post("/labeling/claim/").status_code == 403
    item.refresh_from_db()
    assert (item.state, item.claimed_by, item.answer) == ("pending", None, "")


@pytest.mark.django_db
def test_the_pages_claim_answer_and_land_on_the_next_item(moderator):
    pool(0.35, 0.45)
    labeling_draw(day=date.today(), budget=5)
    page = Client()
    page.force_login(moderator)
    queue = page.get("/labeling/")
    assert queue.status_code == 200
    assert b'id="labeling-waiting">2<' in queue.content
    claimed = page.post("/labeling/claim/")
    first = LabelingItem.objects.get(state="claimed")
    assert claimed["Location"] == f"/labeling/{first.pk}/"
    shown = page.get(claimed["Location"])
    assert b'class="photo concealed"' in shown.content
    assert b'id="labeling-form"' in shown.content
    answered = page.post(f"/labeling/{first.pk}/answer/", {"answer": "no_violation"})
    second = LabelingItem.objects.get(state="claimed")
    assert answered["Location"] == f"/labeling/{second.pk}/"
    skipped = page.post(f"/labeling/{second.pk}/skip/")
    assert skipped["Location"] == "/labeling/"
    second.refresh_from_db()
    assert (second.state, second.claimed_by) == ("pending", None)
    assert second.rank > first.rank


@pytest.mark.django_db
def test_the_figures_compare_each_strategy_with_random_per_policy(settings, moderator):
    settings.LABELING_STRATEGY_SHARES = {"uncertainty": 0.5, "random": 0.5}
    pool(0.31, 0.33, 0.46, 0.48)
    labeling_draw(day=DAY, budget=4)
    answers = {"uncertainty": ["violation", "violation"], "random": ["no_violation", "unsure"]}
    for strategy, values in answers.items():
        for item, answer in zip(
            LabelingItem.objects.filter(strategy=strategy), values, strict=True
        ):
            LabelingItem.objects.filter(pk=item.pk).update(state="answered", answer=answer)
    (firearms,) = labeling_figures()
    assert firearms["policy"] == "firearms"
    assert firearms["random_share"] == 0.0
    assert firearms["strategies"] == [
        {
            "strategy": "uncertainty",
            "drawn": 2,
            "answered": 2,
            "violations": 2,
            "unsure": 0,
            "share": 1.0,
            "beats_random": True,
        },
        {
            "strategy": "random",
            "drawn": 2,
            "answered": 1,
            "violations": 0,
            "unsure": 1,
            "share": 0.0,
            "beats_random": None,
        },
    ]
    page = Client()
    page.force_login(moderator)
    body = page.get("/labeling/").content.decode()
    assert 'data-policy="firearms" data-strategy="uncertainty"' in body
    assert "beats random" in body


@pytest.mark.django_db(transaction=True)
def test_concurrent_draws_of_the_same_day_make_one_draw():
    from tests.reviews.test_concurrency import run_threads

    pool(0.35, 0.4, 0.45, 0.48)
    ids = run_threads(4, lambda i: labeling_draw(day=DAY, budget=3).pk)
    assert len(set(ids)) == 1
    assert LabelingDraw.objects.count() == 1
    assert LabelingItem.objects.count() == 3
