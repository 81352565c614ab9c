"""One error shape for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}."""

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def error_response(code: str, message: str, *, status_code: int, details=None) -> Response:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return Response(body, status=status_code)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "invalid", "The request is not valid.", response.data
    elif isinstance(exc, exceptions.APIException):
        code = exc.default_code if isinstance(exc.default_code, str) else "error"
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        message, details = str(detail), None
    else:  # pragma: no cover - DRF only maps APIException and Http404/PermissionDenied
        code, message, details = "error", "Request failed.", None
    if response.status_code == status.HTTP_404_NOT_FOUND:
        code = "not_found"
    response.data = {"error": {"code": code, "message": message}}
    if details is not None:
        response.data["error"]["details"] = details
    return response
