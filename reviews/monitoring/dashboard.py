"""The dashboard's figures over a chosen period, bucketed by hour (one day) or by day.

Every figure is a handful of aggregate queries: rows are grouped and counted in the database
(`Trunc` to the bucket, `Count` with `filter=`), never loaded one by one, so the page costs the
same with a thousand cases or ten million. Buckets follow the clock in the portal's time zone
(whole hours, or days from midnight); the last bucket ends now.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import cached_property

import numpy as np
from django.conf import settings
from django.db.models import Case as When_
from django.db.models import Count, F, IntegerField, Q, Value, When
from django.db.models.functions import Cast, Floor, Greatest, Least, Trunc
from django.utils import timezone

from detection.models import DetectionEvent
from detection.policies import POLICY_CODES
from llm_verify.models import LlmVerdict
from reviews.appeals.models import Appeal
from reviews.cases.models import Case, Queue
from reviews.decisions.models import Decision
from reviews.monitoring import drift
from reviews.monitoring.charts import DASH, NOTHING
from reviews.monitoring.models import DriftAlarm, DriftCheckRun
from reviews.qa.figures import appeal_figures, wilson

PERIOD_DAYS = (1, 7, 30, 90)
DEFAULT_DAYS = 7
SCORE_BINS = 10
MAX_DISTRIBUTIONS = 24  # (policy, model version) pairs shown, the busiest first
MAX_ALARMS = 50

# Routes above the monitor band: the ladder sends these to an action or to a review.
ACTED_ROUTES = (Case.Route.AUTO_ACTION, Case.Route.LLM_VERIFY, Case.Route.HUMAN_REVIEW)


@dataclass(frozen=True)
class Period:
    days: int
    unit: str  # "hour" or "day"
    starts: tuple[datetime, ...]  # bucket starts, oldest first
    end: datetime  # now: the end of the last bucket
    reference_start: datetime
    reference_end: datetime  # the start of the period

    @property
    def start(self) -> datetime:
        return self.starts[0]

    @property
    def ends(self) -> tuple[datetime, ...]:
        return (*self.starts[1:], self.end)

    def labels(self) -> list[str]:
        """Short labels for the axis."""
        fmt = "%H:%M" if self.unit == "hour" else "%d %b"
        return [timezone.localtime(s).strftime(fmt) for s in self.starts]

    def full_labels(self) -> list[str]:
        fmt = "%Y-%m-%d %H:00" if self.unit == "hour" else "%Y-%m-%d"
        return [timezone.localtime(s).strftime(fmt) for s in self.starts]

    def index(self, bucket: datetime | None) -> int | None:
        """The position of the bucket that starts at `bucket` (as `Trunc` gives it)."""
        if bucket is None:
            return None
        return self._positions.get(bucket)

    @cached_property
    def _positions(self) -> dict[datetime, int]:
        return {s: i for i, s in enumerate(self.starts)}


def period_parse(raw: str | None) -> tuple[int, str | None]:
    """The period the query string asks for, or the default and a note saying why."""
    if raw is None or raw == "":
        return DEFAULT_DAYS, None
    # ASCII digits only: int() would also take full-width digits and surrounding spaces
    days = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else None
    if days in PERIOD_DAYS:
        return days, None
    shown = raw if len(raw) <= 20 else raw[:20] + "…"
    offered = ", ".join(str(d) for d in PERIOD_DAYS[:-1]) + f" or {PERIOD_DAYS[-1]}"
    return DEFAULT_DAYS, (
        f"“{shown}” is not a period this page offers ({offered} days); "
        f"showing the last {DEFAULT_DAYS} days."
    )


def period_for(days: int, *, now: datetime | None = None) -> Period:
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    local = timezone.localtime(now, tz)
    if days == 1:
        unit = "hour"
        # whole hours in UTC, so a daylight-saving change cannot skip or repeat one
        current = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        starts = tuple(current - timedelta(hours=23 - i) for i in range(24))
    else:
        unit = "day"
        today = local.date()
        starts = tuple(
            timezone.make_aware(datetime.combine(today - timedelta(days=days - 1 - i), time()), tz)
            for i in range(days)
        )
    reference_days = getattr(settings, "DRIFT_REFERENCE_DAYS", None)
    length = timedelta(days=reference_days) if reference_days else now - starts[0]
    return Period(
        days=days,
        unit=unit,
        starts=starts,
        end=now,
        reference_start=starts[0] - length,
        reference_end=starts[0],
    )


def _bucket(field_name: str, period: Period) -> Trunc:
    return Trunc(field_name, period.unit, tzinfo=timezone.get_current_timezone())


def _in_period(field_name: str, period: Period) -> Q:
    return Q(**{f"{field_name}__gte": period.start, f"{field_name}__lte": period.end})


# --- queue depth and SLA ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    review: list[int]
    escalation: list[int]
    appeals: list[int]

    @property
    def empty(self) -> bool:
        return not any(self.review) and not any(self.escalation) and not any(self.appeals)


def _waiting_at(moment: datetime, opened: str, done: str) -> Q:
    return Q(**{f"{opened}__lte": moment}) & (
        Q(**{f"{done}__isnull": True}) | Q(**{f"{done}__gt": moment})
    )


def queue_depth(period: Period) -> QueueDepth:
    """Cases undecided (waiting or being reviewed) in the review and escalation queues, and
    appeals undecided, at each bucket end: opened at or before it and not decided by then.
    Cases the ladder closed without a review (monitor, allow) never waited and do not count;
    automatic actions are decided the moment they open. A case counts under the queue kind it
    has now."""
    ends = period.ends
    per_end = {
        f"at_{i}": Count("id", filter=_waiting_at(end, "created_at", "decided_at"))
        for i, end in enumerate(ends)
    }
    rows = (
        Case.objects.filter(queue_kind__in=(Queue.Kind.REVIEW, Queue.Kind.ESCALATION))
        .exclude(state=Case.State.CLOSED, decided_at__isnull=True)
        .filter(created_at__lte=period.end)
        .filter(Q(decided_at__isnull=True) | Q(decided_at__gt=period.start))
        .order_by()
        .values("queue_kind")
        .annotate(**per_end)
    )
    depth = {kind: [0] * len(ends) for kind in (Queue.Kind.REVIEW, Queue.Kind.ESCALATION)}
    for row in rows:
        depth[row["queue_kind"]] = [row[f"at_{i}"] for i in range(len(ends))]
    appeal_counts = (
        Appeal.objects.filter(received_at__lte=period.end)
        .filter(Q(decided_at__isnull=True) | Q(decided_at__gt=period.start))
        .aggregate(
            **{
                f"at_{i}": Count("id", filter=_waiting_at(end, "received_at", "decided_at"))
                for i, end in enumerate(ends)
            }
        )
    )
    return QueueDepth(
        review=depth[Queue.Kind.REVIEW],
        escalation=depth[Queue.Kind.ESCALATION],
        appeals=[appeal_counts[f"at_{i}"] for i in range(len(ends))],
    )


@dataclass(frozen=True)
class Share:
    hits: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def percent(self) -> str:
        return NOTHING if self.rate is None else f"{self.rate * 100:.1f}%"

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return wilson(self.hits, self.n)

    @property
    def interval_text(self) -> str:
        low, high = self.interval
        if low is None or high is None:
            return NOTHING
        return f"{low * 100:.1f}{DASH}{high * 100:.1f}%"


@dataclass(frozen=True)
class BucketedShare:
    buckets: list[Share]
    total: Share

    @property
    def empty(self) -> bool:
        return self.total.n == 0


def _shares(period: Period, rows, hits: str, n: str) -> BucketedShare:
    buckets = [Share(0, 0) for _ in period.starts]
    for row in rows:
        i = period.index(row["bucket"])
        if i is not None:
            buckets[i] = Share(row[hits], row[n])
    return BucketedShare(
        buckets=buckets,
        total=Share(sum(b.hits for b in buckets), sum(b.n for b in buckets)),
    )


def sla_attainment(period: Period) -> BucketedShare:
    """Of the cases a moderator decided in each bucket, those decided at or before the case's
    SLA deadline (one case, one count, however many people decided it)."""
    rows = (
        Decision.objects.filter(_in_period("created_at", period), source=Decision.Source.HUMAN)
        .annotate(bucket=_bucket("created_at", period))
        .order_by()
        .values("bucket")
        .annotate(
            n=Count("case", distinct=True),
            in_time=Count("case", distinct=True, filter=Q(created_at__lte=F("case__sla_due_at"))),
        )
    )
    return _shares(period, rows, "in_time", "n")


# --- decision mix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    series: dict[str, list[int]]  # category label -> count per bucket, in display order
    total: int

    @property
    def empty(self) -> bool:
        return self.total == 0


def _mix(period: Period, rows, key: str, order: list[tuple[str, str]]) -> Mix:
    counts = {value: [0] * len(period.starts) for value, _ in order}
    for row in rows:
        i = period.index(row["bucket"])
        if i is not None and row[key] in counts:
            counts[row[key]][i] += row["n"]
    series = {label: counts[value] for value, label in order if any(counts[value])}
    return Mix(series=series, total=sum(sum(v) for v in series.values()))


def decision_mix(period: Period) -> tuple[Mix, Mix]:
    """Decisions made in each bucket by who or what made them, and by the flagged policy of
    their case."""
    decisions = Decision.objects.filter(_in_period("created_at", period)).annotate(
        bucket=_bucket("created_at", period)
    )
    by_source = decisions.order_by().values("bucket", "source").annotate(n=Count("id"))
    by_policy = decisions.order_by().values("bucket", "case__policy_id").annotate(n=Count("id"))
    return (
        _mix(period, by_source, "source", list(Decision.Source.choices)),
        _mix(period, by_policy, "case__policy_id", [(code, code) for code in POLICY_CODES]),
    )


# --- score distributions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    policy: str
    model_version: str
    recent: list[int]  # cases per score bin in the period
    reference: list[int]  # cases per score bin in the reference window
    psi: float | None  # None without reference data

    @property
    def recent_n(self) -> int:
        return sum(self.recent)

    @property
    def reference_n(self) -> int:
        return sum(self.reference)

    @property
    def band(self) -> str:
        """The usual reading of PSI: below 0.1 stable, up to 0.25 a shift worth watching,
        above it a significant shift."""
        if self.psi is None:
            return "no reference"
        if self.psi < 0.1:
            return "stable"
        return "moderate shift" if self.psi < 0.25 else "significant shift"


def population_stability_index(reference: list[int], recent: list[int]) -> float | None:
    """The drift check's PSI (reviews.monitoring.drift.psi: empty bins count as a share of
    1e-4), or None when either window is empty."""
    if not sum(reference) or not sum(recent):
        return None
    return drift.psi(np.asarray(reference), np.asarray(recent))


SCORE_EDGES = tuple(i / SCORE_BINS for i in range(SCORE_BINS + 1))


def score_distributions(period: Period) -> list[Distribution]:
    """What the drift check compares, over the page's period: the top score of each flag the
    detection tier emitted in the period (its random `sample` events left out), binned in tenths
    of [0, 1] (the last bin holds 1.0), per top policy and model version, beside the same for the
    reference window."""
    score_bin = Least(
        Greatest(Cast(Floor(F("top_score") * SCORE_BINS), IntegerField()), Value(0)),
        Value(SCORE_BINS - 1),
    )
    window = When_(
        When(emitted_at__gte=period.reference_end, then=Value("recent")),
        default=Value("reference"),
    )
    rows = (
        DetectionEvent.objects.filter(
            is_sample=False, emitted_at__gte=period.reference_start, emitted_at__lte=period.end
        )
        .annotate(score_bin=score_bin, window=window)
        .order_by()
        .values("top_policy", "model_version", "window", "score_bin")
        .annotate(n=Count("id"))
    )
    found: dict[tuple[str, str], dict[str, list[int]]] = {}
    for row in rows:
        key = (row["top_policy"], row["model_version"])
        hist = found.setdefault(key, {"recent": [0] * SCORE_BINS, "reference": [0] * SCORE_BINS})
        hist[row["window"]][row["score_bin"]] += row["n"]
    busiest = sorted(
        (key for key, hist in found.items() if any(hist["recent"])),
        key=lambda key: (-sum(found[key]["recent"]), key),
    )[:MAX_DISTRIBUTIONS]
    shown = sorted(busiest, key=lambda key: (_policy_order(key[0]), key[1]))
    return [
        Distribution(
            policy=policy,
            model_version=version,
            recent=found[(policy, version)]["recent"],
            reference=found[(policy, version)]["reference"],
            psi=population_stability_index(
                found[(policy, version)]["reference"], found[(policy, version)]["recent"]
            ),
        )
        for policy, version in shown
    ]


def _policy_order(code: str) -> int:
    return POLICY_CODES.index(code) if code in POLICY_CODES else len(POLICY_CODES)


# --- LLM agreement, automation, appeals ------------------------------------------------------


@dataclass(frozen=True)
class LlmAgreement:
    over_time: BucketedShare  # agreements among verdicts that took a side
    per_policy: dict[str, Share]
    uncertain: int  # people decided a case where the LLM said "uncertain"


LLM_SIDES = (Decision.Verdict.VIOLATION, Decision.Verdict.NO_VIOLATION)


def llm_agreement(period: Period) -> LlmAgreement:
    """Moderators' decisions in the period on cases with an LLM verdict: they agree when the
    verdict is the same and, for a violation, so is the policy."""
    decisions = Decision.objects.filter(
        _in_period("created_at", period),
        source=Decision.Source.HUMAN,
        case__llm_verdict__status=LlmVerdict.Status.OK,
    )
    sided = Q(case__llm_verdict__decision__in=LLM_SIDES)
    agree = (
        sided
        & Q(verdict=F("case__llm_verdict__decision"))
        & (Q(verdict=Decision.Verdict.NO_VIOLATION) | Q(policy_id=F("case__llm_verdict__policy")))
    )
    counts = {
        "n": Count("id", filter=sided),
        "agree": Count("id", filter=agree),
        "uncertain": Count("id", filter=~sided),
    }
    by_bucket = (
        decisions.annotate(bucket=_bucket("created_at", period))
        .order_by()
        .values("bucket")
        .annotate(**counts)
    )
    over_time = _shares(period, by_bucket, "agree", "n")
    uncertain = 0
    for row in by_bucket:
        uncertain += row["uncertain"] if period.index(row["bucket"]) is not None else 0
    per_policy = {
        row["case__policy_id"]: Share(row["agree"], row["n"])
        for row in decisions.order_by().values("case__policy_id").annotate(**counts)
        if row["n"]
    }
    return LlmAgreement(
        over_time=over_time,
        per_policy={code: per_policy[code] for code in POLICY_CODES if code in per_policy},
        uncertain=uncertain,
    )


@dataclass(frozen=True)
class Automation:
    auto_verified: BucketedShare  # of cases decided in a bucket, those closed by a machine
    review_reduction: BucketedShare  # of cases routed to action or review, no person needed


def automation(period: Period) -> Automation:
    """Auto-verified share: of the cases decided in each bucket (by decision time), those
    closed by an automatic or LLM-verified decision rather than by a person. Review reduction:
    of the cases opened in each bucket that the ladder routed above the monitor band (automatic
    action, LLM band, human review), those no person had to review (so far)."""
    machine_closed = Q(state=Case.State.CLOSED, decided_at__isnull=False)
    decided = (
        Case.objects.filter(_in_period("decided_at", period))
        .annotate(bucket=_bucket("decided_at", period))
        .order_by()
        .values("bucket")
        .annotate(n=Count("id"), machine=Count("id", filter=machine_closed))
    )
    routed = (
        Case.objects.filter(_in_period("created_at", period), route__in=ACTED_ROUTES)
        .annotate(bucket=_bucket("created_at", period))
        .order_by()
        .values("bucket")
        .annotate(n=Count("id"), no_person=Count("id", filter=machine_closed))
    )
    return Automation(
        auto_verified=_shares(period, decided, "machine", "n"),
        review_reduction=_shares(period, routed, "no_person", "n"),
    )


# --- drift alarms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftState:
    open_alarms: list[DriftAlarm]
    # The newest run that finished without an error; None: none has yet (or none is kept).
    last_run: DriftCheckRun | None
    # The newest run, when it is newer than `last_run`: one that failed, or one not finished
    # (running now, or stopped before it could record); else None.
    newer_run: DriftCheckRun | None
    recent_hours: int
    reference_days: int

    @property
    def never_ran(self) -> bool:
        return self.last_run is None and self.newer_run is None


def drift_state() -> DriftState:
    alarms = list(
        DriftAlarm.objects.filter(resolved_at__isnull=True).order_by("severity", "-raised_at")[
            :MAX_ALARMS
        ]
    )
    newest = DriftCheckRun.objects.order_by("-ran_at", "-id").first()
    if newest is not None and newest.finished_at is not None and not newest.error:
        last, newer = newest, None
    else:
        last = (
            DriftCheckRun.objects.filter(finished_at__isnull=False, error="")
            .order_by("-ran_at", "-id")
            .first()
        )
        newer = newest
    return DriftState(
        open_alarms=alarms,
        last_run=last,
        newer_run=newer,
        recent_hours=settings.DRIFT_RECENT_HOURS,
        reference_days=settings.DRIFT_REFERENCE_DAYS,
    )


# --- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    period: Period
    queue_depth: QueueDepth
    sla: BucketedShare
    mix_by_source: Mix
    mix_by_policy: Mix
    distributions: list[Distribution]
    llm: LlmAgreement
    automation: Automation
    appeals: dict = field(default_factory=dict)  # reviews.qa.figures.appeal_figures
    drift: DriftState | None = None

    @property
    def appeal_rate(self) -> Share:
        """Restricting decisions of the period appealed so far."""
        overall = self.appeals["overall"]
        return Share(overall["appealed"], overall["decisions"])

    @property
    def overturn_rate(self) -> Share:
        """Of their appeals decided so far, those overturned."""
        overall = self.appeals["overall"]
        return Share(overall["overturned"], overall["decided"])


def dashboard_figures(*, days: int, now: datetime | None = None) -> Dashboard:
    period = period_for(days, now=now)
    by_source, by_policy = decision_mix(period)
    return Dashboard(
        period=period,
        queue_depth=queue_depth(period),
        sla=sla_attainment(period),
        mix_by_source=by_source,
        mix_by_policy=by_policy,
        distributions=score_distributions(period),
        llm=llm_agreement(period),
        automation=automation(period),
        appeals=appeal_figures(days=days, since=period.start),
        drift=drift_state(),
    )
