"""Wellbeing settings a moderator chooses (images blurred and grey by default)."""

from django.utils import timezone

from reviews.cases.models import UserPreference


def preference_set(*, user, blur_images: bool, greyscale_images: bool) -> UserPreference:
    pref, _ = UserPreference.objects.update_or_create(
        user=user,
        defaults={
            "blur_images": blur_images,
            "greyscale_images": greyscale_images,
            "updated_at": timezone.now(),
        },
    )
    return pref


def preference_for(*, user) -> UserPreference:
    return UserPreference.objects.filter(user=user).first() or UserPreference(user=user)
