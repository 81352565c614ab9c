"""The labeling queue: worked by moderators, label only (no enforcement). Its items are
LabelingItem rows, not cases; the row names the queue and who works it."""

from django.db import migrations

QUEUE = {
    "slug": "labeling",
    "name": "Labeling (label only, no enforcement)",
    "kind": "labeling",
    "policies": [],
    "regions": [],
    "languages": [],
    "roles": ["moderator"],
    "groups": [],
    "position": 100,
}


def add_queue(apps, schema_editor):
    Queue = apps.get_model("reviews", "Queue")
    Queue.objects.get_or_create(slug=QUEUE["slug"], defaults=QUEUE)


class Migration(migrations.Migration):
    dependencies = [
        ("active_learning", "0001_initial"),
        ("reviews", "0002_seed_defaults"),
    ]

    operations = [migrations.RunPython(add_queue, migrations.RunPython.noop)]
