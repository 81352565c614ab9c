from django.core.management.base import BaseCommand, CommandError

from reviews.enforcement.delivery import messages_redeliver


class Command(BaseCommand):
    help = (
        "Send enforcement webhooks again from the start of the retry schedule, with the same "
        "webhook id and body: the given outbox messages and/or every failed one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--id",
            type=int,
            nargs="+",
            action="extend",
            dest="ids",
            metavar="N",
            help="outbox message ids (repeatable)",
        )
        parser.add_argument("--failed", action="store_true", help="every failed message")

    def handle(self, *args, ids=None, failed=False, **options):
        if not ids and not failed:
            raise CommandError("give --id N ... or --failed")
        count = messages_redeliver(ids=ids, failed=failed)
        self.stdout.write(f"{count} enforcement messages queued to be sent again")
