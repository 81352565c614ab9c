"""Reactions to detection's enrichment progress: open pages refresh (a hint); a flag whose hash
step matched an image a person banned is routed by the ladder's rule for it
(reviews.cases.known_bad, as a task so a failure is retried); and a pending LLM verification
starts as soon as the evidence is complete instead of waiting for its fallback timer
(reviews.cases.opening enqueues it with a countdown)."""

from django.dispatch import receiver

from detection.models import EnrichmentStep, HashMatch, KnownBadImage
from detection.signals import enrichment_step_finished
from moderation_portal.core import live
from moderation_portal.core.unsent import task_send
from reviews.cases.models import Case
from reviews.cases.tasks import known_bad_route_task, llm_verify_case_task

FINISHED = [EnrichmentStep.State.DONE, EnrichmentStep.State.FAILED, EnrichmentStep.State.SKIPPED]


@receiver(enrichment_step_finished)
def enrichment_finished(sender, event_id, step, state, **kwargs):
    row = Case.objects.filter(detection_event_id=event_id).values_list("id", "llm_state").first()
    if row is None:
        return
    case_id, llm_state = row
    if (
        step == EnrichmentStep.Name.HASHES
        and state == EnrichmentStep.State.DONE
        and HashMatch.objects.filter(
            event_id=event_id,
            known_bad__source=KnownBadImage.Source.DECISION,
            known_bad__withdrawn_at__isnull=True,
        ).exists()
    ):
        task_send(known_bad_route_task, args=[event_id])
    live.notify_case_changed(case_id, "enrichment")
    if llm_state == Case.LlmState.PENDING and not (
        EnrichmentStep.objects.filter(event_id=event_id).exclude(state__in=FINISHED).exists()
    ):
        task_send(llm_verify_case_task, args=[case_id])
