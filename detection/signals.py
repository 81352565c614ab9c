from django.dispatch import Signal

# Sent after an enrichment step of an event finished (done, failed or skipped), outside any
# transaction, with `event_id`, `step` and `state`: pages showing the case refresh.
enrichment_step_finished = Signal()
