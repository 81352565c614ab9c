from reviews.cases.intake import detections_ingest as events_ingest
from reviews.models import Case
from tests import factories as f


def open_cases(*scores, policy="firearms", **kw) -> list[Case]:
    """Ingest one event per score (the real path) and return their cases in order."""
    events = [f.event(score=s, policy=policy, **kw) for s in scores]
    outcomes = events_ingest(events=events, source="api")
    assert all(o.status == "accepted" for o in outcomes), outcomes
    return [Case.objects.get(detection_event__event_id=e["event_id"]) for e in events]
