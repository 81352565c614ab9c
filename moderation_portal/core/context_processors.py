from moderation_portal.core.access import roles_of


def roles(request):
    return {"portal_roles": roles_of(getattr(request, "user", None))}
