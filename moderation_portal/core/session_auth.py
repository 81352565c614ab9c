"""The API's session authentication. Its own module: DRF imports the authentication classes
while `rest_framework.views` is still loading, so this imports nothing that imports views."""

from rest_framework import authentication


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, with the CSRF check run on Django's request: DRF's own
    reads `request.POST` through its parsers, so a session without the role was answered by
    the body (400 for bad JSON, 415 where a view has no parser) instead of 403. Django's
    request leaves a JSON body unread."""

    def enforce_csrf(self, request):
        return super().enforce_csrf(request._request)
