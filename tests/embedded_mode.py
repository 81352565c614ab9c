"""Running `manage.py` in the embedded mode (SQLite, eager Celery, no services) from a test: the
environment without the test run's service settings, and a runner in the project root."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_SETTINGS = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_EAGER",
    "SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
}


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_SETTINGS}
    env["PORTAL_VAR_DIR"] = str(var_dir)
    return env


def embedded_manage(env: dict[str, str]) -> Callable[..., str]:
    def manage(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        ).stdout

    return manage
