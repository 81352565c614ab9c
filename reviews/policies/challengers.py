"""Champion and challenger: shadow models' scores (`detection.challengers` in the event, stored as
`ShadowScore`) beside the champion's, on the same cases. They never route anything; this module
only reads them.

A comparison of one challenger, per policy, over the cases of the last `days` days that it
scored (newest first, at most MAX_CASES). The window is by the event's `emitted_at`, the time the
models scored the listing, for the comparison and for the list of challengers alike, so a
challenger is listed for exactly the window its comparison covers:

- **decided by people**: cases whose standing (latest) decision is a moderator's, a QA
  correction or an appeal's, or a machine decision a QA lead agreed with. A (case, policy) pair
  is judged when the policy is the one the case was flagged for or the one the person found;
  it is a violation when the person found a violation of that policy. A model that sent no
  score for the policy counts as scoring 0.
- **precision and recall** at the active ladder's two thresholds per policy: `action`, the
  lowest score the ladder acts on automatically (min(warn, remove)), and `review`, the score
  from which a person looks at the flag; **agreement** with the people's verdicts, the model
  calling a violation from `review` up, with Cohen's kappa.
- **what-if routing** over every scored case (decided or not): each model's top policy and score
  routed under the active ladder with `backtest.routing_tally`, the function the ladder backtest
  counts with: automatic actions, LLM-band cases, human reviews, monitor and allow.

Every proportion comes with its count, its denominator and a 95 % Wilson interval.
"""

from collections import Counter
from datetime import timedelta

from django.db.models import Count, Exists, Max, Min, OuterRef, Subquery
from django.utils import timezone

from detection.models import DetectionEvent, ShadowScore
from detection.policies import POLICY_CODES
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.decisions.services import HUMAN_CONFIRMATIONS
from reviews.policies.backtest import move_matrix, routing_tally
from reviews.policies.ladder import ROUTES, Route
from reviews.qa.figures import cohen_kappa, wilson
from reviews.qa.models import QaReview

MAX_CASES = 50_000
CHUNK = 5000
CHAMPION, CHALLENGER = "champion", "challenger"
MODELS = (CHAMPION, CHALLENGER)
# The routing sides of routing_tally: the champion's rows go first, the challenger's second.
SIDES = {CHAMPION: "before", CHALLENGER: "after"}
# What the page calls each route.
ROUTE_LABELS = {
    Route.AUTO_ACTION: "automatic actions",
    Route.LLM_VERIFY: "LLM-band cases",
    Route.HUMAN_REVIEW: "human reviews",
    Route.MONITOR: "monitor",
    Route.ALLOW: "allow",
}


def proportion(count: int, n: int) -> dict:
    low, high = wilson(count, n)
    return {
        "count": count,
        "n": n,
        "rate": count / n if n else None,
        "ci_low": low,
        "ci_high": high,
    }


def thresholds_of(row: dict) -> dict[str, float]:
    """The active ladder's two decision points for one policy."""
    return {"action": min(row["warn"], row["remove"]), "review": row["review"]}


def top_of(scores: dict[str, float]) -> tuple[str, float]:
    """The policy a model flags and its score (ties go to the first code in order, as ingest)."""
    policy = max(sorted(scores), key=lambda code: scores[code])
    return policy, float(scores[policy])


# --- what is there -----------------------------------------------------------------------------


def window_start(days: int):
    """The start of the comparison window of the last `days` days."""
    return timezone.now() - timedelta(days=days)


def challengers_seen(*, days: int) -> list[dict]:
    """Every challenger model version that scored an event the detection tier emitted in the last
    `days` days: how many of those events (each has one case) and when it first and last scored
    one of them, newest first. Grouped over the window only: the events come from their
    `emitted_at` index, their shadow scores from the (event, model version, policy) one."""
    rows = (
        ShadowScore.objects.filter(event__emitted_at__gte=window_start(days))
        .values("model_version")
        .annotate(
            cases=Count("event", distinct=True),
            first_seen=Min("event__emitted_at"),
            last_seen=Max("event__emitted_at"),
        )
        .order_by("-last_seen", "model_version")
    )
    return [
        {
            "model_version": r["model_version"],
            "cases": r["cases"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
        }
        for r in rows
    ]


def challenger_exists(model_version: str) -> bool:
    """Whether the model version ever scored a stored event (its (model version, policy) index)."""
    return ShadowScore.objects.filter(model_version=model_version).exists()


def any_challenger() -> bool:
    return ShadowScore.objects.exists()


def event_challenger_scores(event: DetectionEvent) -> dict[str, dict[str, float]]:
    """Challenger model version → its scores of this event (one query)."""
    out: dict[str, dict[str, float]] = {}
    for version, policy, score in (
        ShadowScore.objects.filter(event=event)
        .order_by("model_version", "policy")
        .values_list("model_version", "policy", "score")
    ):
        out.setdefault(version, {})[policy] = score
    return out


def case_score_table(event: DetectionEvent) -> dict:
    """The case page's scores: one row per policy any model scored, the champion's score first
    and then each challenger's (None where a model sent none), champion's highest first."""
    challengers = event_challenger_scores(event)
    versions = sorted(challengers)
    policies = set(event.scores) | {p for scores in challengers.values() for p in scores}
    rows = [
        {
            "policy": code,
            "score": event.scores.get(code),
            "challengers": [challengers[v].get(code) for v in versions],
        }
        for code in POLICY_CODES
        if code in policies
    ]
    rows.sort(key=lambda r: -(r["score"] if r["score"] is not None else -1.0))
    return {"challenger_versions": versions, "score_rows": rows}


# --- the comparison ----------------------------------------------------------------------------


def _cases(challenger: str, since) -> list[tuple]:
    latest = Decision.objects.filter(case=OuterRef("pk")).order_by("-created_at", "-id")
    return list(
        Case.objects.filter(detection_event__emitted_at__gte=since)
        .filter(
            Exists(
                ShadowScore.objects.filter(
                    event_id=OuterRef("detection_event_id"), model_version=challenger
                )
            )
        )
        .annotate(
            decision_id=Subquery(latest.values("id")[:1]),
            decision_source=Subquery(latest.values("source")[:1]),
            decision_verdict=Subquery(latest.values("verdict")[:1]),
            decision_policy=Subquery(latest.values("policy_id")[:1]),
        )
        .annotate(
            qa_agreed=Exists(
                QaReview.objects.filter(
                    sample__decision_id=OuterRef("decision_id"),
                    outcome=QaReview.Outcome.AGREE,
                )
            )
        )
        .order_by("-created_at", "-id")
        .values_list(
            "detection_event_id",
            "policy_id",
            "score",
            "detection_event__scores",
            "detection_event__model_version",
            "decision_source",
            "decision_verdict",
            "decision_policy",
            "qa_agreed",
        )[: MAX_CASES + 1]
    )


def _shadow_scores(challenger: str, event_ids: list[int]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for start in range(0, len(event_ids), CHUNK):
        for event_id, policy, score in ShadowScore.objects.filter(
            model_version=challenger, event_id__in=event_ids[start : start + CHUNK]
        ).values_list("event_id", "policy", "score"):
            out.setdefault(event_id, {})[policy] = score
    return out


def _classification(judged: list[tuple[bool, float, dict[str, float]]]) -> dict:
    """Precision and recall at each threshold, and agreement and kappa at `review`, over judged
    (is a violation, the model's score, the policy's thresholds) triples."""
    out: dict = {}
    for name in ("action", "review"):
        tp = fp = fn = 0
        for violation, score, cuts in judged:
            flagged = score >= cuts[name]
            tp += violation and flagged
            fp += (not violation) and flagged
            fn += violation and not flagged
        out[name] = {"precision": proportion(tp, tp + fp), "recall": proportion(tp, tp + fn)}
    matrix: Counter = Counter()
    for violation, score, cuts in judged:
        human = "violation" if violation else "no_violation"
        model = "violation" if score >= cuts["review"] else "no_violation"
        matrix[(human, model)] += 1
    agree = matrix[("violation", "violation")] + matrix[("no_violation", "no_violation")]
    out["agreement"] = proportion(agree, len(judged))
    out["kappa"] = cohen_kappa(dict(matrix))
    return out


def _route_shares(counts: Counter, n: int) -> dict:
    return {str(route): proportion(counts[route], n) for route in ROUTES}


def challenger_compare(*, challenger: str, thresholds: dict, days: int) -> dict:
    """The champion against `challenger` under the ladder `thresholds` (see the module)."""
    since = window_start(days)
    rows = _cases(challenger, since)
    truncated = len(rows) > MAX_CASES
    rows = rows[:MAX_CASES]
    shadow = _shadow_scores(challenger, [r[0] for r in rows])

    champion_versions: Counter = Counter()
    pairs = []  # ((champion's policy, score), (challenger's policy, score)) per case
    judged: dict[str, dict[str, list]] = {code: {m: [] for m in MODELS} for code in POLICY_CODES}
    cut_points = {code: thresholds_of(thresholds[code]) for code in POLICY_CODES}
    decided_cases = 0
    for (
        event_id,
        policy,
        score,
        champion_scores,
        version,
        source,
        verdict,
        found,
        qa_agreed,
    ) in rows:
        challenger_scores = shadow.get(event_id, {})
        champion_versions[version] += 1
        pairs.append(((policy, score), top_of(challenger_scores)))
        if source is None or not (source in HUMAN_CONFIRMATIONS or qa_agreed):
            continue
        decided_cases += 1
        violation_of = found if verdict == Decision.Verdict.VIOLATION else None
        for code in {policy, found} - {None}:
            is_violation, cuts = violation_of == code, cut_points[code]
            judged[code][CHAMPION].append(
                (is_violation, float(champion_scores.get(code, 0.0)), cuts)
            )
            judged[code][CHALLENGER].append(
                (is_violation, float(challenger_scores.get(code, 0.0)), cuts)
            )

    tally = routing_tally(pairs, before=thresholds, after=thresholds)
    per_policy = []
    for code in POLICY_CODES:
        counts = tally.per_policy.get(code, Counter())
        routed = {
            model: Counter({r: counts[(SIDES[model], r)] for r in ROUTES}) for model in MODELS
        }
        pairs_judged = judged[code][CHAMPION]
        per_policy.append(
            {
                "policy": code,
                "thresholds": cut_points[code],
                "judged": len(pairs_judged),
                "violations": sum(1 for v, _, _ in pairs_judged if v),
                **{
                    model: {
                        **_classification(judged[code][model]),
                        "routed": sum(routed[model].values()),
                        "routes": _route_shares(routed[model], sum(routed[model].values())),
                    }
                    for model in MODELS
                },
            }
        )
    pooled = {model: [t for code in POLICY_CODES for t in judged[code][model]] for model in MODELS}
    overall_routes = {CHAMPION: tally.side("before"), CHALLENGER: tally.side("after")}
    return {
        "challenger": challenger,
        "champion_versions": dict(sorted(champion_versions.items())),
        "days": days,
        "since": since.isoformat(),
        "cases": tally.total,
        "decided_cases": decided_cases,
        "max_cases": MAX_CASES,
        "truncated": truncated,
        "routes": [str(r) for r in ROUTES],
        "overall": {
            "judged": len(pooled[CHAMPION]),
            "violations": sum(1 for v, _, _ in pooled[CHAMPION] if v),
            **{
                model: {
                    **_classification(pooled[model]),
                    "routed": tally.total,
                    "routes": _route_shares(overall_routes[model], tally.total),
                }
                for model in MODELS
            },
        },
        "policies": per_policy,
        # moves[champion's route][challenger's route], in the order of "routes"
        "moves": move_matrix(tally),
    }
