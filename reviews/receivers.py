from django.dispatch import receiver

from detection.signals import enrichment_step_finished, events_accepted
from reviews.services import cases_open_for_events


@receiver(events_accepted)
def open_cases(sender, events, **kwargs):
    cases_open_for_events(events=events)


@receiver(enrichment_step_finished)
def enrichment_finished(sender, event_id, step, state, **kwargs):
    from detection.models import EnrichmentStep
    from reviews import live
    from reviews.models import Case

    row = Case.objects.filter(detection_event_id=event_id).values_list("id", "llm_state").first()
    if row is None:
        return
    case_id, llm_state = row
    live.notify_case_changed(case_id, "enrichment")
    if llm_state == Case.LlmState.PENDING:
        unfinished = EnrichmentStep.objects.filter(event_id=event_id).exclude(
            state__in=[EnrichmentStep.State.DONE, EnrichmentStep.State.FAILED, EnrichmentStep.State.SKIPPED]
        )
        if not unfinished.exists():
            from reviews.tasks import llm_verify_case_task

            llm_verify_case_task.apply_async(args=[case_id])
