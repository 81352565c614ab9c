from django.core.management.base import BaseCommand, CommandError

from moderation_portal.core.login_throttle import client_address_parse, login_throttle_reset


class Command(BaseCommand):
    help = (
        "Lift a login lock early: forget the failed logins of an account and/or a client "
        "address (LOGIN_THROTTLE_*). Locks also end by themselves after the window."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="the account, as people type it")
        parser.add_argument("--address", help="a client address (IPv6: any address of the /64)")

    def handle(self, *args, username=None, address=None, **options):
        if not username and not address:
            raise CommandError("name an account, an --address, or both")
        counted = None
        if address:
            counted = client_address_parse(address)
            if counted is None:
                raise CommandError(f"{address!r} is not an IP address")
        login_throttle_reset(username=username, address=counted)
        what = [f"account {username!r}"] if username else []
        what += [f"address {counted}"] if counted else []
        self.stdout.write(f"unlocked {' and '.join(what)}")
