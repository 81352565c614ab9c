"""Every model of the active_learning app, gathered from its sub-packages."""

from active_learning.labeling.models import LabelingDraw, LabelingItem
from active_learning.labels.models import Label

__all__ = ["Label", "LabelingDraw", "LabelingItem"]
