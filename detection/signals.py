from django.dispatch import Signal

# Sent inside the ingest transaction with `events`: the DetectionEvent rows this call inserted.
# Higher layers (reviews) open their cases here, so an accepted event never lacks its case.
events_accepted = Signal()

# Sent after an enrichment step of an event finished (done, failed or skipped), outside any
# transaction, with `event_id`, `step` and `state`: pages showing the case refresh.
enrichment_step_finished = Signal()
