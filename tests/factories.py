"""Test data in one place: valid schema-v1 events and helpers to break them."""

import base64
import copy
import hashlib
import io
import itertools
from datetime import UTC, datetime, timedelta

from PIL import Image

_counter = itertools.count(1)


def png_bytes(colour=(200, 30, 30), size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def inline_image(image_id="img-1", data: bytes | None = None) -> dict:
    data = data if data is not None else png_bytes()
    return {
        "id": image_id,
        "data": base64.b64encode(data).decode(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def event(
    *,
    policy="firearms",
    score=0.8,
    seller="seller-1",
    listing=None,
    title="Pistol for sale",
    description="Cash only.",
    images=None,
    event_id=None,
    trace_id=None,
    **detection_overrides,
) -> dict:
    n = next(_counter)
    now = datetime.now(UTC)
    ev = {
        "schema_version": 1,
        "event_id": event_id or f"ev-{n}-{now.timestamp():.0f}",
        "trace_id": trace_id or f"trace-{n}",
        "emitted_at": now.isoformat(),
        "listing": {
            "id": listing or f"listing-{n}",
            "title": title,
            "description": description,
            "price": {"amount": "120.00", "currency": "USD"},
            "category": "sports",
            "region": "US",
            "language": "en",
            "created_at": (now - timedelta(hours=1)).isoformat(),
            "images": images if images is not None else [inline_image()],
        },
        "seller": {
            "id": seller,
            "account_created_at": (now - timedelta(days=30)).isoformat(),
            "prior_violations": 1,
            "country": "US",
        },
        "detection": {
            "model": "listing-guard",
            "model_version": "2026.11.1",
            "scores": {policy: score, "scam": 0.05},
            "modality_scores": {"text": {policy: score}, "image": {policy: score * 0.9}},
            "reason_codes": ["weapon_keyword"],
        },
    }
    ev["detection"].update(detection_overrides)
    return ev


def mutate(ev: dict, path: str, value=None, *, delete=False) -> dict:
    """A copy of `ev` with the dotted `path` set to `value` (or deleted)."""
    out = copy.deepcopy(ev)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out
