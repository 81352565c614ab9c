from django.db import migrations

from moderation_portal.core.append_only import drop_triggers, install_triggers


class Migration(migrations.Migration):
    dependencies = [("reviews", "0002_seed_defaults")]

    operations = [migrations.RunPython(install_triggers("reviews"), drop_triggers("reviews"))]
