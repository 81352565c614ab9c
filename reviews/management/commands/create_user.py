import sys

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from moderation_portal.core.access import PERSON_ROLES


class Command(BaseCommand):
    help = "Provision a person with a role; the password is read from standard input."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", action="append", required=True, choices=PERSON_ROLES)
        parser.add_argument("--password-stdin", action="store_true", required=True)
        parser.add_argument(
            "--skip-password-check", action="store_true", help="for demo accounts only"
        )

    @transaction.atomic
    def handle(self, *args, username, role, password_stdin, skip_password_check=False, **options):
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise CommandError("no password on standard input")
        user, created = User.objects.get_or_create(username=username)
        if not skip_password_check:
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
        user.set_password(password)
        user.is_active = True
        user.save()
        user.groups.set(Group.objects.filter(name__in=role))
        self.stdout.write(
            f"{'created' if created else 'updated'} {username} with role(s) {', '.join(role)}"
        )
