"""Validation of incoming events against schema version 1, with precise reasons.

Everything in an event is written by somebody we do not trust: sizes are bounded before any
work, images are decoded with a pixel limit, and image URLs are never fetched unless their host
is on the allow-list.
"""

import base64
import binascii
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from itertools import islice
from urllib.parse import urlsplit

import fastjsonschema
from django.conf import settings
from jsonschema import Draft202012Validator
from PIL import Image, UnidentifiedImageError

from detection.intake.schema import event_schema
from detection.intake.storable import describe_unstorable, escape_unstorable, unstorable_strings

MAX_REASONS = 20  # enough to fix an event in one go; bounds the size of a dead letter's reasons

ALLOWED_IMAGE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}

_CODES = {
    "required": "missing_field",
    "type": "wrong_type",
    "maxLength": "too_long",
    "minLength": "too_short",
    "maxItems": "too_many_items",
    "minItems": "too_few_items",
    "minimum": "out_of_range",
    "maximum": "out_of_range",
    "pattern": "bad_format",
    "additionalProperties": "unknown_field",
    "propertyNames": "unknown_value",
    "enum": "unknown_value",
    "const": "unsupported_value",
    "oneOf": "bad_image_source",
    "minProperties": "missing_field",
}


@dataclass(frozen=True)
class Reason:
    field: str
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass
class ValidImage:
    external_id: str
    sha256: str
    position: int
    url: str = ""
    data: bytes | None = None
    content_type: str = ""
    width: int | None = None
    height: int | None = None


@dataclass
class ValidEvent:
    payload: dict
    event_id: str
    trace_id: str
    emitted_at: datetime
    listing_created_at: datetime
    seller_created_at: datetime
    price_amount: Decimal
    images: list[ValidImage] = field(default_factory=list)

    @property
    def top_policy(self) -> tuple[str, float]:
        scores = self.payload["detection"]["scores"]
        policy = max(sorted(scores), key=lambda code: scores[code])
        return policy, float(scores[policy])

    @property
    def challenger_scores(self) -> list[tuple[str, str, float]]:
        """(model version, policy, score) of every shadow model's score: stored, never routed."""
        return [
            (challenger["model_version"], policy, float(score))
            for challenger in self.payload["detection"].get("challengers", [])
            for policy, score in sorted(challenger["scores"].items())
        ]


@lru_cache(maxsize=4)
def _validators(cache_key: tuple):
    schema = event_schema()
    # The fast path: the schema compiled to Python (draft 7 has every keyword the schema uses).
    # It only says yes or no; the precise reasons of a rejection come from jsonschema.
    fast_schema = {k: v for k, v in schema.items() if k not in {"$schema", "$id"}}
    fast = fastjsonschema.compile(fast_schema, use_default=False, use_formats=False)
    return fast, Draft202012Validator(schema)


def _current_validators():
    key = (
        settings.INGEST_MAX_TITLE_CHARS,
        settings.INGEST_MAX_DESCRIPTION_CHARS,
        settings.INGEST_MAX_IMAGES,
        settings.INGEST_MAX_IMAGE_BYTES,
    )
    return _validators(key)


def _path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _schema_reason(error) -> Reason:
    where = _path(error.absolute_path)
    code = _CODES.get(error.validator, "invalid")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{where}.{missing}" if where != "$" else missing
        message = "is required"
    elif error.validator == "propertyNames" or "propertyNames" in error.absolute_schema_path:
        bad = error.instance
        if "scores" in where:
            message, code = f"unknown policy code {bad!r}", "unknown_policy"
        else:
            message = f"unknown key {bad!r}"
    elif error.validator in {"minimum", "maximum"}:
        message = (
            f"{error.instance!r} is outside [{0}, {1}]" if "scores" in where else error.message
        )
    elif error.validator == "maxLength":
        message = f"is longer than {error.validator_value} characters"
    elif error.validator == "maxItems":
        message = f"has more than {error.validator_value} items"
    elif error.validator == "oneOf":
        message = "an image needs exactly one of 'url' or 'data'"
    elif error.validator == "additionalProperties":
        message = error.message
    else:
        message = error.message
        if len(message) > 300:
            message = message[:300] + "…"
    # Paths and messages quote what arrived; they are stored with the dead letter.
    return Reason(escape_unstorable(where), code, escape_unstorable(message))


def _unstorable_reasons(event: dict) -> list[Reason]:
    """Every string the database could not store, keys included, wherever it sits in the event:
    found here, it is a reason; found at the INSERT, it would fail the whole batch."""
    return [
        Reason(
            path,
            "unstorable_text",
            f"the {role} contains {describe_unstorable(text)}, which cannot be stored",
        )
        for path, role, text in islice(unstorable_strings(event), MAX_REASONS)
    ]


def _parse_datetime(value: str, where: str, reasons: list[Reason]) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        reasons.append(Reason(where, "bad_format", "is not an ISO 8601 date-time"))
        return None
    if parsed.tzinfo is None:
        reasons.append(Reason(where, "bad_format", "has no time zone"))
        return None
    return parsed


def host_is_allowed(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == allowed.lower() for allowed in settings.IMAGE_HOST_ALLOWLIST)


def _check_image(raw: dict, position: int, reasons: list[Reason]) -> ValidImage | None:
    where = f"listing.images[{position}]"
    image = ValidImage(external_id=raw["id"], sha256=raw["sha256"], position=position)
    if "url" in raw:
        parts = urlsplit(raw["url"])
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            reasons.append(
                Reason(f"{where}.url", "bad_url", "must be an https URL without credentials")
            )
            return None
        if not host_is_allowed(raw["url"]):
            reasons.append(
                Reason(
                    f"{where}.url",
                    "host_not_allowed",
                    f"host {parts.hostname!r} is not on the image allow-list",
                )
            )
            return None
        image.url = raw["url"]
        return image
    try:
        data = base64.b64decode(raw["data"], validate=True)
    except (binascii.Error, ValueError):
        reasons.append(Reason(f"{where}.data", "bad_base64", "is not valid base64"))
        return None
    if len(data) > settings.INGEST_MAX_IMAGE_BYTES:
        reasons.append(
            Reason(
                f"{where}.data",
                "image_too_large",
                f"is {len(data)} bytes; the limit is {settings.INGEST_MAX_IMAGE_BYTES}",
            )
        )
        return None
    if hashlib.sha256(data).hexdigest() != raw["sha256"]:
        reasons.append(
            Reason(f"{where}.sha256", "sha256_mismatch", "does not match the image bytes")
        )
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            width, height = img.size
            if width * height > settings.INGEST_MAX_IMAGE_PIXELS:
                reasons.append(
                    Reason(
                        f"{where}.data",
                        "image_too_large",
                        f"{width}x{height} pixels is over the limit",
                    )
                )
                return None
            img.verify()
    except Image.DecompressionBombError:  # Pillow refuses to open it at all: a pixel bomb
        reasons.append(
            Reason(f"{where}.data", "image_too_large", "declares more pixels than the limit")
        )
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        reasons.append(Reason(f"{where}.data", "not_an_image", "is not a readable image"))
        return None
    if fmt not in ALLOWED_IMAGE_FORMATS:
        reasons.append(
            Reason(f"{where}.data", "unsupported_image", f"format {fmt} is not accepted")
        )
        return None
    image.data, image.content_type, image.width, image.height = (
        data,
        ALLOWED_IMAGE_FORMATS[fmt],
        width,
        height,
    )
    return image


def _check_finite_scores(detection: dict, reasons: list[Reason]) -> None:
    """JSON text may carry NaN, which every range check lets through: refuse it by name."""
    groups = [("detection.scores", detection["scores"])]
    groups += [
        (f"detection.modality_scores.{modality}", scores)
        for modality, scores in detection["modality_scores"].items()
    ]
    groups += [
        (f"detection.challengers[{i}].scores", challenger["scores"])
        for i, challenger in enumerate(detection.get("challengers", []))
    ]
    for where, scores in groups:
        for policy, score in scores.items():
            if not math.isfinite(score):
                reasons.append(Reason(f"{where}.{policy}", "not_a_number", "is not a number"))


def _check_challengers(detection: dict, reasons: list[Reason]) -> None:
    """Each shadow model once, and none of them the champion (its scores are the event's)."""
    seen: set[str] = set()
    for position, challenger in enumerate(detection.get("challengers", [])):
        version = challenger["model_version"]
        where = f"detection.challengers[{position}].model_version"
        if version == detection["model_version"]:
            reasons.append(
                Reason(
                    where,
                    "challenger_is_champion",
                    "is the champion's model_version: a challenger is another model",
                )
            )
        elif version in seen:
            reasons.append(
                Reason(
                    where, "duplicate_challenger", "repeats an earlier challenger's model_version"
                )
            )
        seen.add(version)


def parse_event(raw) -> tuple[object, list[Reason]]:
    """Turn what arrived (a dict, or JSON text) into a dict, or say why it cannot be read."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, [Reason("$", "unparseable_json", f"is not valid JSON: {exc}")]
    if not isinstance(raw, dict):
        return None, [
            Reason("$", "wrong_type", f"an event must be a JSON object, not {type(raw).__name__}")
        ]
    return raw, []


def validate_event(raw) -> tuple[ValidEvent | None, list[Reason]]:
    event, reasons = parse_event(raw)
    if reasons:
        return None, reasons
    unstorable = _unstorable_reasons(event)
    fast, precise = _current_validators()
    try:
        fast(event)
    except fastjsonschema.JsonSchemaValueException:
        errors = sorted(precise.iter_errors(event), key=lambda e: [str(p) for p in e.absolute_path])
        reasons = [_schema_reason(err) for err in errors]
        if not reasons:  # the two validators must agree; never accept what one of them refused
            reasons = [Reason("$", "invalid", "does not match the event schema")]
        return None, (unstorable + reasons)[:MAX_REASONS]
    if unstorable:
        return None, unstorable
    emitted = _parse_datetime(event["emitted_at"], "emitted_at", reasons)
    listed = _parse_datetime(event["listing"]["created_at"], "listing.created_at", reasons)
    seller_created = _parse_datetime(
        event["seller"]["account_created_at"], "seller.account_created_at", reasons
    )
    images: list[ValidImage] = []
    seen_ids: set[str] = set()
    for position, raw_image in enumerate(event["listing"]["images"]):
        if raw_image["id"] in seen_ids:
            reasons.append(
                Reason(
                    f"listing.images[{position}].id",
                    "duplicate_image_id",
                    "repeats an earlier image id",
                )
            )
            continue
        seen_ids.add(raw_image["id"])
        checked = _check_image(raw_image, position, reasons)
        if checked is not None:
            images.append(checked)
    _check_finite_scores(event["detection"], reasons)
    _check_challengers(event["detection"], reasons)
    if reasons:
        return None, reasons
    return (
        ValidEvent(
            payload=event,
            event_id=event["event_id"],
            trace_id=event["trace_id"],
            emitted_at=emitted,
            listing_created_at=listed,
            seller_created_at=seller_created,
            price_amount=Decimal(event["listing"]["price"]["amount"]),
            images=images,
        ),
        [],
    )
