"""One error shape for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}."""

from drf_spectacular.authentication import SessionScheme
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from moderation_portal.core import unavailable


def error_response(code: str, message: str, *, status_code: int, details=None) -> Response:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return Response(body, status=status_code)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        reason = unavailable.unavailable_reason(exc)
        if reason is None:
            return None  # propagates to handler500, which answers in this shape too
        unavailable.count(reason)
        answer = error_response(reason, unavailable.MESSAGES[reason], status_code=503)
        answer["Retry-After"] = unavailable.retry_after()
        return answer
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "invalid", "The request is not valid.", response.data
    elif isinstance(exc, exceptions.APIException):
        code = exc.default_code if isinstance(exc.default_code, str) else "error"
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        message, details = str(detail), None
    else:  # Django's Http404 and PermissionDenied, which DRF answers 404 and 403
        code, message, details = "error", str(exc), None
    if response.status_code == status.HTTP_404_NOT_FOUND:
        code, message = "not_found", message or "Not found."
    elif response.status_code == status.HTTP_403_FORBIDDEN and code == "error":
        code, message = "permission_denied", message or "You do not have permission to do this."
    response.data = {"error": {"code": code, "message": message}}
    if details is not None:
        response.data["error"]["details"] = details
    return response


def not_found(request, exception=None):
    """Django's handler404: a path no API route matches answers in the error shape."""
    from django.http import JsonResponse
    from django.views import defaults

    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": "not_found", "message": "No such API resource."}}, status=404
        )
    return defaults.page_not_found(request, exception)


class SessionAuthenticationScheme(SessionScheme):
    """Documents it in the OpenAPI schema as DRF's own (the session cookie)."""

    target_class = "moderation_portal.core.session_auth.SessionAuthentication"
