"""Roles are Django groups. Every view and API names the roles it admits: pages through
`role_required`, the API through `role_permission`."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

MODERATOR = "moderator"
APPEALS = "appeals"
QA_LEAD = "qa_lead"
POLICY_ADMIN = "policy_admin"
DETECTION_TIER = "detection_tier"  # machine accounts, never people
MARKETPLACE = "marketplace"  # the marketplace's machine account: seller appeals

PERSON_ROLES = (MODERATOR, APPEALS, QA_LEAD, POLICY_ADMIN)
MACHINE_ROLES = (DETECTION_TIER, MARKETPLACE)
ALL_ROLES = (*PERSON_ROLES, *MACHINE_ROLES)


def roles_of(user) -> set[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_portal_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) & set(ALL_ROLES)
        user._portal_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(roles_of(user) & set(roles))


def role_permission(*roles: str) -> type[BasePermission]:
    """A DRF permission class admitting users who hold any of `roles`."""

    class HasRole(BasePermission):
        message = f"This needs one of the roles: {', '.join(roles)}."

        def has_permission(self, request, view) -> bool:
            return has_role(request.user, *roles)

    HasRole.roles = roles  # read by the permission matrix test
    HasRole.__name__ = "HasRole_" + "_".join(roles)
    return HasRole


def role_required(*roles: str):
    """A page decorator: log in first, then one of `roles`, else 403."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        wrapped.portal_roles = roles  # read by the permission matrix test
        return wrapped

    return decorator
