"""Live update latency: from a decision's commit to 100 connected queue pages (websockets on
Daphne, channels-redis), beside a bare channel-layer group_send to the same 100 pages in the
same run (the transport's own floor: no database, no coalescing window)."""

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench._db import reset_database, use_bench_database

DB = "moderation_portal_bench_live"
PAGES = int(os.environ.get("BENCH_LIVE_PAGES", "100"))
ROUNDS = int(os.environ.get("BENCH_LIVE_ROUNDS", "30"))
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench live passphrase"

use_bench_database(DB)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _login(session, base: str) -> None:
    async with session.get(f"{base}/login/") as r:
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await r.text()).group(1)
    async with session.post(
        f"{base}/login/",
        data={"username": "bench-watcher", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        allow_redirects=False,
    ) as r:
        assert r.status == 302, await r.text()


async def measure(base: str, claim, decide, bare_send) -> tuple[list, list, list, list]:
    import aiohttp

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        await _login(session, base)
        sockets = [
            await session.ws_connect(
                base.replace("http", "ws") + "/ws/queues/", headers={"Origin": base}
            )
            for _ in range(PAGES)
        ]
        await asyncio.sleep(0.5)

        async def drain():
            await asyncio.sleep(0.15)
            for ws in sockets:
                while True:
                    try:
                        await asyncio.wait_for(ws.receive(), timeout=0.001)
                    except TimeoutError:
                        break

        async def wait_all(t0: float) -> list[float]:
            async def one(ws):
                await ws.receive()
                return time.perf_counter() - t0

            return await asyncio.gather(*(asyncio.wait_for(one(ws), 10) for ws in sockets))

        portal_each, portal_last, bare_each, bare_last = [], [], [], []
        loop = asyncio.get_running_loop()
        for _ in range(ROUNDS):
            case = await loop.run_in_executor(None, claim)
            await wait_all(
                time.perf_counter()
            )  # each page gets the claim's notification first: not timed
            committed = await loop.run_in_executor(None, decide, case)  # perf_counter() at commit
            latencies = await wait_all(committed)
            portal_each += latencies
            portal_last.append(max(latencies))
            t0 = time.perf_counter()
            await bare_send()
            latencies = await wait_all(t0)
            bare_each += latencies
            bare_last.append(max(latencies))
        for ws in sockets:
            await ws.close()
    return portal_each, portal_last, bare_each, bare_last


def main() -> None:
    reset_database(DB)
    import django

    django.setup()
    from channels.layers import get_channel_layer
    from django.contrib.auth.models import Group, User

    from bench._common import summary_ms, write_result
    from detection.intake.simulator import DetectionTierSimulator
    from reviews.cases import claims
    from reviews.cases.intake import detections_ingest as events_ingest
    from reviews.decisions.services import DecisionSpec

    moderator = User.objects.create_user("bench-mod", password=PASSWORD)
    moderator.groups.add(Group.objects.get(name="moderator"))
    watcher = User.objects.create_user("bench-watcher", password=PASSWORD)
    watcher.groups.add(Group.objects.get(name="moderator"))
    sim = DetectionTierSimulator(seed=5)
    events = []
    while len(events) < ROUNDS * 3:
        ev = sim.event()
        ev["detection"]["scores"] = {"firearms": 0.6}
        events.append(ev)
    events_ingest(events=events, source="bench")

    def claim():
        return claims.case_claim_next(user=moderator)

    def decide(case) -> float:
        claims.case_decide(
            case=case,
            user=moderator,
            spec=DecisionSpec(verdict="no_violation", policy=None, action="none"),
        )
        return time.perf_counter()

    layer = get_channel_layer()

    async def bare_send():
        await layer.group_send("queues", {"type": "queues.changed"})

    port = _free_port()
    log = open(ROOT / "var" / "bench-live-daphne.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "moderation_portal.asgi:application",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        portal_each, portal_last, bare_each, bare_last = asyncio.run(
            measure(base, claim, decide, bare_send)
        )
    finally:
        server.terminate()
        server.wait(10)
    p_each, p_last, b_each, b_last = (
        summary_ms(x) for x in (portal_each, portal_last, bare_each, bare_last)
    )
    write_result(
        "live_updates",
        figures={
            "pages": PAGES,
            "rounds": ROUNDS,
            "decision_commit_to_each_page": p_each,
            "decision_commit_to_last_page": p_last,
        },
        baseline={"bare_group_send_to_each_page": b_each, "bare_group_send_to_last_page": b_last},
        ratio={
            "p50_each_over_bare": round(p_each["p50_ms"] / b_each["p50_ms"], 2),
            "p99_last_over_bare": round(p_last["p99_ms"] / b_last["p99_ms"], 2),
        },
        notes="Pages are 100 websocket connections of a logged-in moderator to one Daphne "
        "process; the portal coalesces identical change events for 20 ms before sending "
        "(moderation_portal/core/live.py), which is part of "
        "the figure. Clients, server, Redis and PostgreSQL share the machine's 2 cores.",
    )


if __name__ == "__main__":
    main()
