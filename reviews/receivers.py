from django.dispatch import receiver

from detection.signals import events_accepted
from reviews.services import cases_open_for_events


@receiver(events_accepted)
def open_cases(sender, events, **kwargs):
    cases_open_for_events(events=events)
