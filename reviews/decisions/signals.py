"""Signals of the decision path, for higher layers that derive state from decisions without
reviews importing them (active_learning turns decisions into training labels)."""

from django.dispatch import Signal

# Sent by decisions_record inside the decisions' own transaction, after every other side
# effect, with `decisions`: the saved Decision rows, in the order they were recorded. A
# receiver that raises rolls the decisions back with it, so receivers write only what must be
# consistent with the decision.
decisions_recorded = Signal()
