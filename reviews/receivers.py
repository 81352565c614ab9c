from django.dispatch import receiver

from detection.signals import enrichment_step_finished, events_accepted
from reviews.services import cases_open_for_events


@receiver(events_accepted)
def open_cases(sender, events, **kwargs):
    cases_open_for_events(events=events)


@receiver(enrichment_step_finished)
def enrichment_finished(sender, event_id, step, state, **kwargs):
    from reviews import live
    from reviews.models import Case

    case_id = Case.objects.filter(detection_event_id=event_id).values_list("id", flat=True).first()
    if case_id is not None:
        live.notify_case_changed(case_id, "enrichment")
