from django.dispatch import Signal

# Sent inside the ingest transaction with `events`: the DetectionEvent rows this call inserted.
# Higher layers (reviews) open their cases here, so an accepted event never lacks its case.
events_accepted = Signal()
