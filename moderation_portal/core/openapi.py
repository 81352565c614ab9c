"""The OpenAPI schema documents every refusal: its status code and the one error shape.

drf-spectacular documents what each view annotates. Refusals that every operation can give
(401 without valid credentials, 403 without the role or CSRF token, 503 when the database
cannot serve the request), 400 where an operation takes input and 404 where its path names an
object come from the shared machinery, not the view; this hook adds them to every operation,
and gives every 4xx and 5xx answer the error schema of `moderation_portal.core.api`, so clients
and fuzzers can hold each answer to the schema.
"""

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": 'Every refusal: {"error": {"code", "message", "details"?}}.',
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "minLength": 1},
                "message": {"type": "string", "minLength": 1},
                "details": {"description": "what was wrong, where the code needs more"},
            },
        }
    },
}
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def _refusals(operation: dict) -> dict[str, str]:
    parameters = operation.get("parameters", [])
    refusals = {
        "401": "no credentials, or credentials that are not valid",
        "403": "the caller's role does not allow this (or a session without its CSRF token)",
        "503": "the database is unavailable or busy; nothing was done, try again",
    }
    if "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
        refusals["400"] = "the request is not valid: the details name what is wrong"
    if any(p.get("in") == "path" for p in parameters):
        refusals["404"] = "no such object"
    return refusals


def document_refusals(result, generator, request, public):
    """A drf-spectacular postprocessing hook (idempotent)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in _refusals(operation).items():
                responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code[0] in "45" and "content" not in response:
                    response["content"] = error
    return result
