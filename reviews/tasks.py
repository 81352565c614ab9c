from celery import shared_task

from reviews.services import leases_release_expired


@shared_task(name="reviews.release_expired_leases_task")
def release_expired_leases_task() -> int:
    return leases_release_expired()
