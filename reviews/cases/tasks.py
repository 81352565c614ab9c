from celery import shared_task
from django.db import OperationalError

from reviews.cases.claims import leases_release_expired
from reviews.cases.known_bad import known_bad_route
from reviews.cases.verification import llm_run_for_case, verification_stale_in


@shared_task(name="reviews.release_expired_leases_task")
def release_expired_leases_task() -> int:
    return leases_release_expired()


@shared_task(
    name="reviews.llm_verify_case_task",
    bind=True,
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
    max_retries=5,
)
def llm_verify_case_task(self, case_id: int) -> str | None:
    """Verify a medium-confidence case with the LLM (safe to run twice: it
    claims the case first).

    A copy that finds the verification running elsewhere comes back once that run would be
    stale: the copy redelivered after its worker was killed mid-way is then the one left to
    finish it (the run it finds may be its own, dead with the worker).
    """
    verdict = llm_run_for_case(case_id=case_id)
    if verdict is None:
        wait = verification_stale_in(case_id=case_id)
        if wait is not None and not self.request.is_eager:  # eager: the other run is in process
            raise self.retry(countdown=wait + 1)
    return verdict.status if verdict else None


@shared_task(
    name="reviews.known_bad_route_task",
    acks_late=True,
    autoretry_for=(OperationalError,),
    max_retries=5,
)
def known_bad_route_task(event_id: int) -> str | None:
    """Route a flag that re-uploads a banned image by the ladder's rule (safe to run twice)."""
    return known_bad_route(event_id=event_id)
