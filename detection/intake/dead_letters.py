"""The dead letter store: every event that was not taken, kept with its reasons, whatever it holds.

A dead letter is written when something could not be stored, so writing the letter must not fail
for the same cause: the payload is kept in a form PostgreSQL can store (see DeadLetter.
PayloadEncoding) and every text beside it is escaped.
"""

import base64
import json
import logging

from detection.intake.storable import escape_unstorable, is_storable
from detection.intake.validation import Reason
from detection.models import DeadLetter
from moderation_portal.core.tracing import trace

logger = logging.getLogger(__name__)

Encoding = DeadLetter.PayloadEncoding


def storable_payload(raw: object) -> tuple[str, str]:
    """What arrived as storable text, and the encoding that reads it back."""
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and is_storable(text):
            return text, Encoding.TEXT
        return base64.b64encode(data).decode("ascii"), Encoding.BASE64
    if isinstance(raw, str):
        # JSON text of a string escapes NUL and lone surrogates and reads back as the same string.
        return (raw, Encoding.TEXT) if is_storable(raw) else (json.dumps(raw), Encoding.JSON)
    try:
        text = json.dumps(raw, ensure_ascii=False, default=str)
        if not is_storable(text):  # a lone surrogate: only the ASCII form escapes it
            text = json.dumps(raw, default=str)
        return text, Encoding.JSON
    except (TypeError, ValueError, RecursionError):
        return escape_unstorable(repr(raw)), Encoding.TEXT


def dead_letter_payload(letter: DeadLetter) -> object:
    """What arrived, read back from the letter, to be submitted again."""
    try:
        if letter.payload_encoding == Encoding.JSON:
            return json.loads(letter.payload)
        if letter.payload_encoding == Encoding.BASE64:
            return base64.b64decode(letter.payload, validate=True)
    except ValueError:  # an edited row: submit the text, and validation says what is wrong with it
        return letter.payload
    return letter.payload


def storable_id(raw: object, key: str) -> str:
    value = raw.get(key) if isinstance(raw, dict) else None
    return escape_unstorable(value)[:128] if isinstance(value, str) else ""


def storable_reason(reason: Reason) -> Reason:
    return Reason(
        escape_unstorable(reason.field),
        escape_unstorable(reason.code),
        escape_unstorable(reason.message),
    )


def dead_letters_store(
    *, items: list[tuple[object, list[Reason]]], source: str
) -> list[DeadLetter]:
    letters = []
    for raw, reasons in items:
        payload, encoding = storable_payload(raw)
        letters.append(
            DeadLetter(
                source=source,
                event_id=storable_id(raw, "event_id"),
                trace_id=storable_id(raw, "trace_id"),
                payload=payload,
                payload_encoding=encoding,
                reasons=[storable_reason(r).as_dict() for r in reasons],
            )
        )
    created = DeadLetter.objects.bulk_create(letters)
    for letter in created:
        with trace(letter.trace_id or None):
            logger.warning(
                "event %s rejected: %s",
                letter.event_id or "(no id)",
                "; ".join(f"{r['field']}: {r['message']}" for r in letter.reasons),
            )
    return created
