import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Replay the portal's sampling for labeling on a labeled data set (.npz with X, y and "
        "optionally t) with a logistic-regression learner; print the learning curves as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help=".npz with X (n, d), y (n,), t (n,)?")
        parser.add_argument("--seed-labels", type=_positive, default=20)
        parser.add_argument("--batch", type=_positive, default=10, help="labels per round")
        parser.add_argument("--rounds", type=_positive, default=20)
        parser.add_argument(
            "--strategies",
            default="uncertainty,hard_negative,diversity,random,mix",
            help="comma-separated; mix = LABELING_STRATEGY_SHARES",
        )
        parser.add_argument("--repeats", type=_positive, default=3, help="seed sets to average")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, dataset, seed_labels, batch, rounds, strategies, repeats, seed, **kw):
        # modAL and scikit-learn load here, in the command's process only.
        from active_learning.ml.replay import ReplayConfig, load_dataset, run_replay

        path = Path(dataset)
        if not path.is_file():
            raise CommandError(f"--dataset {dataset}: no such file")
        names = tuple(name.strip() for name in strategies.split(",") if name.strip())
        try:
            config = ReplayConfig(
                seed_labels=seed_labels,
                batch=batch,
                rounds=rounds,
                strategies=names,
                repeats=repeats,
                shares=dict(settings.LABELING_STRATEGY_SHARES),
                seed=seed,
            )
            data = load_dataset(path)
            result = run_replay(data, config)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(result))
