from moderation_portal.roles import roles_of


def roles(request):
    return {"portal_roles": roles_of(getattr(request, "user", None))}
