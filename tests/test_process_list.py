"""The production process list (ops/Procfile and the systemd units in ops/systemd/) runs every
queue the portal sends tasks to, the scheduler when there are periodic tasks, and web processes,
with commands that exist; systemd accepts the units as they are written."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from moderation_portal.celery import app

OPS = Path(__file__).resolve().parent.parent / "ops"
PROCFILE = OPS / "Procfile"
SYSTEMD = OPS / "systemd"
VENV_BIN = Path(sys.executable).parent
APP_ROOT = "/srv/moderation-portal"  # where the units expect the checkout and its .venv
ENV_FILE = "/etc/moderation-portal/portal.env"


def portal_queues() -> set[str]:
    """Every queue a task of the portal is sent to: the default one and each route's."""
    routes = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return {settings.CELERY_TASK_DEFAULT_QUEUE} | routes


def procfile() -> dict[str, list[str]]:
    processes = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.+)", line)
        assert match, f"not a Procfile line: {line!r}"
        name, command = match.groups()
        assert name not in processes, f"{name} twice"
        processes[name] = shlex.split(command)
    return processes


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> every value given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} before any section"
        assert _, f"{path.name}: {line!r} is not key=value"
        current.setdefault(key, []).append(value)
    return sections


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def worker_queues(argv: list[str]) -> set[str]:
    assert argv[:4] == ["celery", "-A", "moderation_portal", "worker"], argv
    return set(option(argv, "-Q").split(","))


def target_wants() -> list[str]:
    target = unit(SYSTEMD / "moderation-portal.target")
    return [name for value in target["Unit"]["Wants"] for name in value.split()]


def exec_start(name: str, instance: str = "") -> list[str]:
    """The unit's command line, its instance name filled in and the checkout's path dropped."""
    (command,) = unit(SYSTEMD / name)["Service"]["ExecStart"]
    argv = shlex.split(command.replace("%i", instance))
    assert argv[0].startswith(f"{APP_ROOT}/.venv/bin/"), argv[0]
    return [argv[0].rsplit("/", 1)[1], *argv[1:]]


def test_every_task_the_portal_sends_goes_to_a_queue_that_has_workers():
    app.loader.import_default_modules()
    tasks = [name for name in app.tasks if not name.startswith("celery.")]
    assert "detection.ingest_events" in tasks
    routed = {name: app.amqp.router.route({}, name)["queue"].name for name in tasks}
    assert set(routed.values()) <= portal_queues()
    assert portal_queues() == {"ingest", "enrich", "llm", "default"}
    # and every periodic task is a task the workers know
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(tasks)


def test_the_procfile_runs_a_worker_per_queue_web_and_one_scheduler():
    processes = procfile()
    workers = {
        name: worker_queues(argv) for name, argv in processes.items() if "worker" in argv[:4]
    }
    served = [queue for queues in workers.values() for queue in queues]
    assert sorted(served) == sorted(portal_queues())  # each queue once a node, none unknown
    for name, argv in processes.items():
        if name in workers:
            assert option(argv, "-n").endswith("@%h")  # unique per node
    web = processes["web"]
    assert web[0] == "daphne"
    assert web[-1] == "moderation_portal.asgi:application"
    assert option(web, "-p") == "$PORT"
    assert settings.CELERY_BEAT_SCHEDULE
    beats = [
        argv
        for argv in processes.values()
        if argv[:4] == ["celery", "-A", "moderation_portal", "beat"]
    ]
    assert len(beats) == 1
    assert set(processes) == {*workers, "web", "beat"}


def test_the_systemd_target_starts_web_processes_and_a_worker_for_every_queue():
    wants = target_wants()
    web_ports = [m.group(1) for w in wants if (m := re.fullmatch(r"portal-web@(\d+)\.service", w))]
    assert len(web_ports) >= 2
    assert len(set(web_ports)) == len(web_ports)
    queues = [m.group(1) for w in wants if (m := re.fullmatch(r"portal-worker@(.+)\.service", w))]
    assert sorted(queues) == sorted(portal_queues())
    assert set(wants) == {
        *(f"portal-web@{p}.service" for p in web_ports),
        *(f"portal-worker@{q}.service" for q in queues),
    }
    # the scheduler is not part of every node: it runs on one node only
    assert "portal-beat.service" not in wants
    for queue in queues:
        argv = exec_start("portal-worker@.service", queue)
        assert worker_queues(argv) == {queue}
    web = exec_start("portal-web@.service", "8001")
    assert (web[0], option(web, "-p"), web[-1]) == (
        "daphne",
        "8001",
        "moderation_portal.asgi:application",
    )
    beat = exec_start("portal-beat.service")
    assert beat[:4] == ["celery", "-A", "moderation_portal", "beat"]
    assert exec_start("portal-migrate.service")[1:] == ["manage.py", "migrate", "--no-input"]
    for name in ("portal-web@.service", "portal-worker@.service", "portal-beat.service"):
        service = unit(SYSTEMD / name)["Service"]
        assert ENV_FILE in service["EnvironmentFile"], name
        assert service["WorkingDirectory"] == [APP_ROOT], name


def test_the_commands_exist_and_name_the_portals_applications():
    commands = {argv[0] for argv in procfile().values()}
    commands |= {
        exec_start(name)[0]
        for name in ("portal-web@.service", "portal-worker@.service", "portal-beat.service")
    }
    assert commands == {"daphne", "celery"}
    for command in commands:
        path = VENV_BIN / command
        assert path.is_file(), path
        assert os.access(path, os.X_OK), path
    # `-A moderation_portal` is the portal's Celery app, the ASGI path its application
    import moderation_portal
    import moderation_portal.asgi

    assert moderation_portal.celery_app is app
    assert callable(moderation_portal.asgi.application)
    # the environment file's example names only settings the portal reads
    example = (SYSTEMD / "portal.env.example").read_text()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE)
    source = (Path(settings.BASE_DIR) / "moderation_portal" / "settings.py").read_text()
    assert names
    assert [n for n in names if f'"{n}"' not in source] == []
    # and the per-queue ones name a real queue and only what the worker unit reads
    (worker_command,) = unit(SYSTEMD / "portal-worker@.service")["Service"]["ExecStart"]
    per_queue = sorted(SYSTEMD.glob("worker-*.env.example"))
    assert per_queue
    for path in per_queue:
        assert path.name.removeprefix("worker-").removesuffix(".env.example") in portal_queues()
        for name in re.findall(r"^([A-Z][A-Z0-9_]+)=", path.read_text(), flags=re.MULTILINE):
            assert f"${{{name}}}" in worker_command, (path.name, name)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_accepts_the_units(tmp_path):
    # As deployed, but with this checkout's virtual environment where the units expect the
    # deployment's, and an environment file where this test can write one.
    env_file = tmp_path / "portal.env"
    env_file.write_text("")
    root = Path(settings.BASE_DIR)
    for path in SYSTEMD.iterdir():
        if path.suffix in {".service", ".target"}:
            text = path.read_text().replace(f"{APP_ROOT}/.venv/bin/", f"{VENV_BIN}/")
            text = text.replace(ENV_FILE, str(env_file)).replace(APP_ROOT, str(root))
            (tmp_path / path.name).write_text(text)
    units = ["moderation-portal.target", "portal-beat.service", "portal-migrate.service"]
    units += target_wants()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{u}" for u in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # any warning (an unknown key, a value systemd cannot parse) is a mistake in the units
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # and it does refuse a broken one
    broken = (tmp_path / "portal-beat.service").read_text().replace("ExecStart=", "ExecStrat=")
    (tmp_path / "broken.service").write_text(broken)
    refused = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "./broken.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "ExecStrat" in refused.stderr
