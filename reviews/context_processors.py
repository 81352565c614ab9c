"""Alerts every page shows to the people who can act on them."""

from moderation_portal.core.access import POLICY_ADMIN, has_role
from reviews.enforcement.selectors import endpoint_disabled


def enforcement_alert(request) -> dict:
    """Policy admins see, on every page, that a 410 has disabled the marketplace's receiver."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not has_role(user, POLICY_ADMIN):
        return {}
    return {"endpoint_alert": endpoint_disabled()}
