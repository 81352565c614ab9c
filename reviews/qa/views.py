"""QA leads' pages: the QA queue of sampled decisions, the review of one, and the figures."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from detection.policies import POLICY_CODES
from moderation_portal.core.access import QA_LEAD, role_required
from reviews.cases.evidence import case_evidence
from reviews.decisions.models import Decision
from reviews.decisions.rules import MAX_NOTES, decision_problems, normalised_policy
from reviews.decisions.services import DecisionSpec
from reviews.qa import services as qa
from reviews.qa.figures import appeal_figures, qa_figures
from reviews.qa.models import QaReview, QaSample


@require_GET
@role_required(QA_LEAD)
def qa_page(request):
    try:
        days = max(1, min(int(request.GET.get("days", "30")), 365))
    except ValueError:
        days = 30
    context = {
        "figures": qa_figures(days=days),
        "appeals": appeal_figures(days=days),
        "days": days,
    }
    return render(request, "reviews/qa.html", context)


@require_POST
@role_required(QA_LEAD)
def qa_claim(request):
    sample = qa.qa_claim_next(user=request.user)
    if sample is None:
        messages.info(request, "No sampled decisions are waiting.")
        return redirect("reviews:qa")
    return redirect("reviews:qa_sample", sample_id=sample.id)


@require_http_methods(["GET", "POST"])
@role_required(QA_LEAD)
def qa_sample(request, sample_id: int):
    sample = (
        QaSample.objects.select_related(
            "decision__llm_verdict",
            "decision__decided_by",
            "case__listing__seller",
            "case__policy",
            "case__detection_event",
            "case__ladder_version",
        )
        .filter(id=sample_id)
        .first()
    )
    if sample is None:
        raise Http404("no such sample")
    if request.method == "POST":
        outcome = request.POST.get("outcome")
        verdict = request.POST.get("verdict", "")
        policy = request.POST.get("policy") or None
        action = request.POST.get("action", "")
        notes = request.POST.get("notes", "")
        problems = [] if outcome in QaReview.Outcome.values else ["choose agree or correct"]
        if outcome == QaReview.Outcome.CORRECT:
            problems += [
                f"{field}: {problem}"
                for field, problem in decision_problems(
                    verdict=verdict, policy=policy, action=action, notes=notes, notes_required=True
                ).items()
            ]
        if problems:
            for p in problems:
                messages.error(request, p)
            return redirect("reviews:qa_sample", sample_id=sample.id)
        spec = DecisionSpec(
            verdict=verdict,
            policy=normalised_policy(verdict=verdict, policy=policy),
            action=action,
            notes=notes[:MAX_NOTES],
        )
        try:
            qa.qa_review_record(sample=sample, user=request.user, outcome=outcome, spec=spec)
        except qa.QaNotHeld:
            messages.error(request, "Claim this sample from the QA queue first.")
            return redirect("reviews:qa")
        messages.success(request, "QA review recorded.")
        return qa_claim(request)
    context = {
        "sample": sample,
        "case": sample.case,
        "decision": sample.decision,
        "listing": sample.case.listing,
        "holds": sample.state == QaSample.State.CLAIMED and sample.claimed_by_id == request.user.id,
        "policy_codes": POLICY_CODES,
        "actions": Decision.Action.choices,
        **case_evidence(sample.case),
    }
    return render(request, "reviews/qa_sample.html", context)
