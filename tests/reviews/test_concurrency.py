"""Concurrency on the real PostgreSQL: many connections at once, as many web nodes would."""

import threading

import pytest
from django.contrib.auth.models import Group, User
from django.db import close_old_connections, connection

from reviews.cases import claims
from reviews.cases.intake import detections_ingest as events_ingest
from reviews.decisions.services import DecisionSpec
from reviews.models import Case
from tests import factories as f

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and SKIP LOCKED are PostgreSQL's; the suite runs on it",
)


@pytest.fixture(autouse=True)
def _a_connection_for_every_thread():
    """Each thread here stands for a claimer process with a connection of its own: the test
    process's pool (DB_POOL_MAX_SIZE for one web process) is widened to hold them all at once."""
    pool = connection.settings_dict.get("OPTIONS", {}).get("pool")
    if not pool:
        yield
        return
    before = dict(pool)
    connection.close()
    connection.close_pool()
    pool["max_size"] = 64
    yield
    connection.close()
    connection.close_pool()
    pool.clear()
    pool.update(before)


def run_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def runner(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_many_concurrent_claimers_never_share_a_case():
    events = [f.event(score=0.5 + i / 100) for i in range(30)]
    events_ingest(events=events, source="api")
    group = Group.objects.get(name="moderator")
    users = []
    for i in range(40):
        u = User.objects.create_user(f"claimer-{i}")
        u.groups.add(group)
        users.append(u)

    claimed = run_threads(40, lambda i: getattr(claims.case_claim_next(user=users[i]), "id", None))
    got = [c for c in claimed if c is not None]
    assert len(got) == 30, "a case was handed out twice or one was stranded"
    assert len(set(got)) == 30, "a case was handed out twice or one was stranded"
    assert claimed.count(None) == 10
    assert Case.objects.filter(state="claimed").count() == 30
    owners = dict(Case.objects.filter(state="claimed").values_list("id", "claimed_by_id"))
    assert len(set(owners.values())) == 30


@pytest.mark.django_db(transaction=True)
def test_fifty_claimers_working_a_queue_decide_every_case_exactly_once():
    events_ingest(events=[f.event(score=0.5 + (i % 20) / 100) for i in range(150)], source="api")
    group = Group.objects.get(name="moderator")
    users = []
    for i in range(50):
        u = User.objects.create_user(f"worker-{i}")
        u.groups.add(group)
        users.append(u)

    def work(i):
        done = []
        while (case := claims.case_claim_next(user=users[i])) is not None:
            claims.case_decide(
                case=case,
                user=users[i],
                spec=DecisionSpec(verdict="no_violation", policy=None, action="none"),
            )
            done.append(case.id)
        return done

    per_worker = run_threads(50, work)
    decided = [c for done in per_worker for c in done]
    assert len(decided) == 150, "a case was handed out twice"
    assert len(set(decided)) == 150, "a case was handed out twice"
    assert Case.objects.exclude(state="decided").count() == 0, "a case was stranded"
    from django.db.models import Count

    from reviews.models import Decision

    assert set(
        Decision.objects.values("case").annotate(n=Count("id")).values_list("n", flat=True)
    ) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_same_event_from_two_workers_at_once_makes_one_case():
    ev = f.event()
    outcomes = run_threads(8, lambda i: events_ingest(events=[ev], source="celery")[0].status)
    assert sorted(outcomes) == ["accepted"] + ["duplicate"] * 7
    assert Case.objects.filter(detection_event__event_id=ev["event_id"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_from_concurrent_workers():
    shared = [f.event(seller=f"seller-{i % 3}") for i in range(20)]
    own = [[f.event(seller=f"seller-{i % 3}") for i in range(10)] for _ in range(4)]
    results = run_threads(
        4, lambda i: [o.status for o in events_ingest(events=shared + own[i], source="celery")]
    )
    accepted = sum(r.count("accepted") for r in results)
    duplicates = sum(r.count("duplicate") for r in results)
    assert accepted == 20 + 40
    assert duplicates == 3 * 20
    assert Case.objects.count() == 60
