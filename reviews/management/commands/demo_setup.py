import secrets

from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand

from detection.models import DetectionEvent
from moderation_portal.roles import PERSON_ROLES
from reviews.bootstrap import defaults_ensure

DEMO_USERS = {
    "moderator": "demo-moderator",
    "appeals": "demo-appeals",
    "qa_lead": "demo-qa",
    "policy_admin": "demo-admin",
}


class Command(BaseCommand):
    help = "Demo set-up: one login per role (fresh passwords, printed here) and simulated flagged listings."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=300, help="listings to simulate on a new database")
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args, count, seed, **options):
        defaults_ensure()
        lines = []
        for role in PERSON_ROLES:
            username = DEMO_USERS[role]
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            lines.append(f"  {role:<13} {username:<16} {password}")
        if not DetectionEvent.objects.exists():
            self.stdout.write(f"Simulating {count} flagged listings through the Celery ingest path…")
            call_command("simulate_detection_tier", "--count", str(count), "--seed", str(seed), "--malformed-ratio", "0.05")
        self.stdout.write("\nDemo logins (new passwords on every start):")
        self.stdout.write("\n".join(lines))
        self.stdout.write("\nOpen http://127.0.0.1:8000 and log in.\n")
