from django.db import migrations

from moderation_portal.core.append_only import drop_triggers, install_triggers


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunPython(install_triggers("core"), drop_triggers("core"))]
