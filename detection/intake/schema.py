"""The ingest contract, schema version 1, as a JSON Schema built from the configured limits.

The same schema validates the Celery task's events and the REST endpoint's, and is served at
/api/v1/schema/detection-event.json so the detection tier can test against it.
"""

from django.conf import settings

from detection.policies import MODALITIES, POLICY_CODES

SCHEMA_VERSION = 1
SCHEMA_ID = "https://moderation-portal.invalid/schemas/detection-event.v1.json"

_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9._:\-]+$"}
_DATETIME = {"type": "string", "format": "date-time", "maxLength": 40}
_PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
_MODEL_VERSION = {"type": "string", "minLength": 1, "maxLength": 64}
# Shadow models scored beside the champion; their scores are stored and compared, never routed.
MAX_CHALLENGERS = 5


def _scores() -> dict:
    return {
        "type": "object",
        "propertyNames": {"enum": list(POLICY_CODES)},
        "additionalProperties": _PROBABILITY,
    }


def event_schema() -> dict:
    image = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "sha256"],
        "properties": {
            "id": _ID,
            "url": {"type": "string", "maxLength": 2000, "pattern": "^https://"},
            "data": {
                "type": "string",
                "description": "The image bytes, base64.",
                # base64 grows by 4/3; the decoded size is checked exactly after decoding.
                "maxLength": (settings.INGEST_MAX_IMAGE_BYTES * 4) // 3 + 4,
            },
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
        "oneOf": [{"required": ["url"]}, {"required": ["data"]}],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Flagged listing event (schema version 1)",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "schema_version",
            "event_id",
            "trace_id",
            "emitted_at",
            "listing",
            "seller",
            "detection",
        ],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "event_id": _ID,
            "trace_id": _ID,
            "emitted_at": _DATETIME,
            "listing": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "id",
                    "title",
                    "description",
                    "price",
                    "category",
                    "region",
                    "language",
                    "created_at",
                    "images",
                ],
                "properties": {
                    "id": _ID,
                    "title": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": settings.INGEST_MAX_TITLE_CHARS,
                    },
                    "description": {
                        "type": "string",
                        "maxLength": settings.INGEST_MAX_DESCRIPTION_CHARS,
                    },
                    "price": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["amount", "currency"],
                        "properties": {
                            "amount": {
                                "type": "string",
                                "pattern": r"^[0-9]{1,12}(\.[0-9]{1,2})?$",
                            },
                            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        },
                    },
                    "category": {"type": "string", "minLength": 1, "maxLength": 128},
                    "region": {"type": "string", "minLength": 1, "maxLength": 32},
                    "language": {
                        "type": "string",
                        "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
                    },
                    "created_at": _DATETIME,
                    "images": {
                        "type": "array",
                        "maxItems": settings.INGEST_MAX_IMAGES,
                        "items": image,
                    },
                },
            },
            "seller": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "account_created_at", "prior_violations", "country"],
                "properties": {
                    "id": _ID,
                    "account_created_at": _DATETIME,
                    "prior_violations": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                    "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
                },
            },
            "detection": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "model_version", "scores", "modality_scores", "reason_codes"],
                "properties": {
                    "model": {"type": "string", "minLength": 1, "maxLength": 128},
                    "model_version": _MODEL_VERSION,
                    "scores": {**_scores(), "minProperties": 1},
                    "modality_scores": {
                        "type": "object",
                        "propertyNames": {"enum": list(MODALITIES)},
                        "additionalProperties": _scores(),
                    },
                    "reason_codes": {
                        "type": "array",
                        "maxItems": 50,
                        "items": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                    "sample": {"type": "boolean"},
                    "challengers": {
                        "type": "array",
                        "description": (
                            "Models running in shadow beside the champion: their scores are "
                            "stored per case and compared on /models/, and never route anything. "
                            "Each model_version appears once and differs from the champion's."
                        ),
                        "maxItems": MAX_CHALLENGERS,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["model_version", "scores"],
                            "properties": {
                                "model_version": _MODEL_VERSION,
                                "scores": {**_scores(), "minProperties": 1},
                            },
                        },
                    },
                },
            },
        },
    }


def batch_schema() -> dict:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.INGEST_MAX_BATCH,
        "items": {"$ref": SCHEMA_ID},
    }
