"""The dashboard page: how moderation is keeping up and whether the model has drifted, for QA
leads and policy admins."""

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from moderation_portal.core.access import POLICY_ADMIN, QA_LEAD, role_required
from reviews.monitoring import charts
from reviews.monitoring.charts import DASH
from reviews.monitoring.dashboard import (
    PERIOD_DAYS,
    SCORE_EDGES,
    BucketedShare,
    Dashboard,
    Mix,
    dashboard_figures,
    period_parse,
)


def _share_series(name: str, shares: BucketedShare) -> charts.Series:
    return charts.Series(
        name,
        [s.rate for s in shares.buckets],
        notes=[
            f"{charts.format_share(s.rate)} ({s.hits:,} of {s.n:,})" if s.n else "none"
            for s in shares.buckets
        ],
    )


def _mix_chart(d: Dashboard, mix: Mix, chart_id: str, title: str, what: str) -> charts.Chart:
    p = d.period
    return charts.stacked_bars(
        chart_id=chart_id,
        title=title,
        description=f"{mix.total:,} decisions in the period, stacked by {what} per {p.unit}.",
        labels=p.labels(),
        full_labels=p.full_labels(),
        series=[charts.Series(name, values) for name, values in mix.series.items()],
        x_header=p.unit,
    )


def dashboard_charts(d: Dashboard) -> dict:
    p = d.period
    labels, full = p.labels(), p.full_labels()
    q = d.queue_depth
    out: dict = {
        "queue_depth": charts.line_chart(
            chart_id="chart-queue-depth",
            title="Queue depth",
            description=(
                f"Cases and appeals undecided at the end of each {p.unit}: now "
                f"{q.review[-1]:,} in review, {q.escalation[-1]:,} in escalation, "
                f"{q.appeals[-1]:,} appeals."
            ),
            labels=labels,
            full_labels=full,
            series=[
                charts.Series("review", q.review),
                charts.Series("escalation", q.escalation),
                charts.Series("appeals", q.appeals),
            ],
            area=True,
            x_header=f"end of {p.unit}",
        ),
        "sla": charts.line_chart(
            chart_id="chart-sla",
            title="SLA attainment",
            description=(
                f"Share of the cases moderators decided in each {p.unit} that were decided by "
                f"their SLA deadline; over the period: {_total(d.sla)}."
            ),
            labels=labels,
            full_labels=full,
            series=[_share_series("decided in time", d.sla)],
            axis=charts.Axis(kind="share", maximum=1.0),
            x_header=p.unit,
        ),
        "mix_source": _mix_chart(
            d, d.mix_by_source, "chart-mix-source", "Decisions by source", "who or what decided"
        ),
        "mix_policy": _mix_chart(
            d, d.mix_by_policy, "chart-mix-policy", "Decisions by policy", "the case's policy"
        ),
        "llm": charts.line_chart(
            chart_id="chart-llm-agreement",
            title=f"LLM{DASH}human agreement",
            description=(
                "Share of moderators' decisions on cases with an LLM verdict that agree with "
                f"it; over the period: {_total(d.llm.over_time)}."
            ),
            labels=labels,
            full_labels=full,
            series=[_share_series("agree with the LLM", d.llm.over_time)],
            axis=charts.Axis(kind="share", maximum=1.0),
            x_header=p.unit,
        ),
        "automation": charts.line_chart(
            chart_id="chart-automation",
            title="Auto-verified share and review reduction",
            description=(
                f"Over the period, auto-verified share: {_total(d.automation.auto_verified)}; "
                f"review reduction: {_total(d.automation.review_reduction)}."
            ),
            labels=labels,
            full_labels=full,
            series=[
                _share_series("auto-verified share", d.automation.auto_verified),
                _share_series("review reduction", d.automation.review_reduction),
            ],
            axis=charts.Axis(kind="share", maximum=1.0),
            x_header=p.unit,
        ),
    }
    out["distributions"] = [
        (
            dist,
            charts.overlaid_histogram(
                chart_id=f"chart-scores-{n}",
                title=f"Scores: {dist.policy} · model {dist.model_version}",
                description=(
                    f"{dist.recent_n:,} flags in the period against {dist.reference_n:,} in the "
                    "reference window; "
                    + (
                        f"PSI {dist.psi:.3f} ({dist.band})."
                        if dist.psi is not None
                        else "no reference data, so no PSI."
                    )
                ),
                edges=SCORE_EDGES,
                recent=dist.recent,
                reference=dist.reference,
            ),
        )
        for n, dist in enumerate(d.distributions)
    ]
    return out


def _total(shares: BucketedShare) -> str:
    t = shares.total
    if not t.n:
        return "none"
    return f"{charts.format_share(t.rate)} ({t.hits:,} of {t.n:,})"


@require_GET
@role_required(QA_LEAD, POLICY_ADMIN)
def dashboard_page(request):
    days, note = period_parse(request.GET.get("days"))
    figures = dashboard_figures(days=days)
    context = {
        "d": figures,
        "charts": dashboard_charts(figures),
        "days": days,
        "periods": PERIOD_DAYS,
        "period_note": note,
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "reviews/dashboard.html", context)
