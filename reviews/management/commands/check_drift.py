import json

from django.core.management.base import BaseCommand

from reviews.monitoring.alerts import alerts_deliver
from reviews.monitoring.drift import drift_check, summary


class Command(BaseCommand):
    help = (
        "Run the drift checks now (score distribution and flag rate, per policy and model "
        "version), store what they found as drift alarms, and send the alerts that are due."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-alerts", action="store_true", help="store the alarms; send no alert now"
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, no_alerts=False, json=False, **options):
        results = drift_check()
        sent = {} if no_alerts else alerts_deliver()
        if json:
            self.stdout.write(_json({**summary(results), "alerts": sent}))
            return
        for r in results:
            line = f"{r.policy:<18} {r.model_version:<16} {r.test:<9} {r.outcome:<15}"
            if r.statistic is not None:
                line += f" statistic={r.statistic:.4g}"
            if r.p_value is not None:
                line += f" p={r.p_value:.3g}"
            if r.reason:
                line += f" ({r.reason})"
            if r.recorded:
                line += f" -> alarm {r.recorded}"
            self.stdout.write(line)
        if not results:
            self.stdout.write("no flagged events in the reference and recent windows")
        if sent.get("configured") is False:
            self.stdout.write("alerts: ALERT_WEBHOOK_URL is not set; none sent")
        elif sent:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(sent.items()) if k != "configured")
            self.stdout.write(f"alerts: {counts or 'none due'}")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)
