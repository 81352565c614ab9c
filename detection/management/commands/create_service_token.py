import secrets

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from detection.intake.tokens import hash_token
from detection.models import ServiceToken
from moderation_portal.core.access import DETECTION_TIER, MACHINE_ROLES


class Command(BaseCommand):
    help = (
        "Provision a machine account's credentials (the detection tier by default, or the "
        "marketplace with --role marketplace); prints the token once (only its hash is stored)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--rotate", action="store_true", help="replace the token of an existing account"
        )
        parser.add_argument("--role", choices=MACHINE_ROLES, default=DETECTION_TIER)

    @transaction.atomic
    def handle(self, *args, name, rotate=False, role=DETECTION_TIER, **options):
        key = "mpt_" + secrets.token_urlsafe(32)
        username = f"svc-{name}"
        existing = ServiceToken.objects.filter(name=name).first()
        if existing and not rotate:
            raise CommandError(
                f"service account {name!r} exists; use --rotate to issue a new token"
            )
        user, _ = User.objects.get_or_create(username=username)
        user.set_unusable_password()  # a machine never logs in to the pages
        user.save()
        user.groups.set([Group.objects.get(name=role)])
        ServiceToken.objects.update_or_create(
            name=name,
            defaults={
                "user": user,
                "key_prefix": key[:8],
                "key_hash": hash_token(key),
                "revoked_at": None,
            },
        )
        self.stdout.write(key)
