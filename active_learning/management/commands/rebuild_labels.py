from django.core.management.base import BaseCommand

from active_learning.labels.services import labels_rebuild


class Command(BaseCommand):
    help = (
        "Derive the training labels of decisions, QA reviews and labeling answers that have "
        "none (those recorded before labels existed), oldest first. Running it again writes "
        "nothing."
    )

    def handle(self, *args, **options):
        r = labels_rebuild()
        self.stdout.write(
            f"labels rebuilt: {r.labels_written} labels from {r.decisions} decisions, "
            f"{r.qa_reviews} QA reviews, {r.labeling_items} labeling answers"
        )
