from celery import shared_task


@shared_task(name="core.send_unsent_tasks_task")
def send_unsent_tasks_task() -> dict[str, int]:
    """Send the tasks the broker refused earlier (moderation_portal.core.unsent)."""
    from moderation_portal.core.unsent import unsent_tasks_send

    return unsent_tasks_send()
