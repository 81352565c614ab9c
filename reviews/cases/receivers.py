"""Reactions to detection's enrichment progress. Nothing here is mandatory: open pages refresh
(a hint), and a pending LLM verification starts as soon as the evidence is complete instead of
waiting for its fallback timer (reviews.cases.opening enqueues it with a countdown)."""

from django.dispatch import receiver

from detection.models import EnrichmentStep
from detection.signals import enrichment_step_finished
from moderation_portal.core import live
from reviews.cases.models import Case
from reviews.cases.tasks import llm_verify_case_task

FINISHED = [EnrichmentStep.State.DONE, EnrichmentStep.State.FAILED, EnrichmentStep.State.SKIPPED]


@receiver(enrichment_step_finished)
def enrichment_finished(sender, event_id, step, state, **kwargs):
    row = Case.objects.filter(detection_event_id=event_id).values_list("id", "llm_state").first()
    if row is None:
        return
    case_id, llm_state = row
    live.notify_case_changed(case_id, "enrichment")
    if llm_state == Case.LlmState.PENDING and not (
        EnrichmentStep.objects.filter(event_id=event_id).exclude(state__in=FINISHED).exists()
    ):
        llm_verify_case_task.apply_async(args=[case_id])
