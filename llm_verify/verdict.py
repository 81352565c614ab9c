"""The structured verdict an LLM returns for a flagged listing, and its checks.

The pydantic model ``Verdict`` is the source of truth; ``verdict_json_schema()`` derives from it
the JSON schema sent to the endpoint as the response format. The schema is kept small and flat
(string enums, short bounded strings, at most four evidence items) so that a grammar-constrained
135M model can fill it, and it avoids keywords that OpenAI's strict mode or llama.cpp's
schema-to-grammar converter reject (``oneOf``, ``discriminator``, ``$ref``).

Given a context, ``verdict_json_schema(context)`` narrows the id fields of the evidence items to
the ids that exist in that context, so a server that enforces the schema cannot even emit an
invented case id. Servers that ignore the schema are caught afterwards by
``validate_against_context``, which every parsed verdict goes through before it is stored.
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detection.policies import POLICY_CODES  # noqa: F401 - re-exported: the policy codes a verdict may name
from llm_verify.context import VerdictContext

PolicyCode = Literal[
    "firearms", "drugs", "counterfeit", "stolen_goods", "human_trafficking", "scam"
]
Decision = Literal["violation", "no_violation", "uncertain"]
Action = Literal["remove", "warn", "none"]

MAX_EVIDENCE_ITEMS = 4
MAX_RATIONALE_CHARS = 300
MAX_NOTE_CHARS = 100
MAX_QUOTE_CHARS = 120
MIN_QUOTE_CHARS = 3
MAX_ID_CHARS = 64

_Note = Annotated[str, Field(max_length=MAX_NOTE_CHARS)]
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListingTextEvidence(_Strict):
    """A span of the listing's title or description, quoted verbatim."""

    kind: Literal["listing_text"]
    quote: Annotated[str, Field(min_length=MIN_QUOTE_CHARS, max_length=MAX_QUOTE_CHARS)]
    note: _Note


class ImageEvidence(_Strict):
    kind: Literal["image"]
    image_id: _Id
    note: _Note


class SimilarCaseEvidence(_Strict):
    """A nearest known violation (or cleared case) from the reference index."""

    kind: Literal["similar_case"]
    case_id: _Id
    note: _Note


class SellerFactEvidence(_Strict):
    """One of the seller facts in the context, by its key (e.g. ``prior_violations``)."""

    kind: Literal["seller_fact"]
    fact: _Id
    note: _Note


class HashMatchEvidence(_Strict):
    """A perceptual-hash match of one of the listing's images against known-bad images."""

    kind: Literal["hash_match"]
    match_id: _Id
    note: _Note


EvidenceItem = Annotated[
    ListingTextEvidence
    | ImageEvidence
    | SimilarCaseEvidence
    | SellerFactEvidence
    | HashMatchEvidence,
    Field(discriminator="kind"),
]

# kind -> (model, name of the field that cites something in the context)
EVIDENCE_KINDS: dict[str, tuple[type[_Strict], str]] = {
    "listing_text": (ListingTextEvidence, "quote"),
    "image": (ImageEvidence, "image_id"),
    "similar_case": (SimilarCaseEvidence, "case_id"),
    "seller_fact": (SellerFactEvidence, "fact"),
    "hash_match": (HashMatchEvidence, "match_id"),
}


class Verdict(_Strict):
    """What the model decided about one flagged listing, and what it rests on.

    Field order is the order the model writes them in: a grammar-constrained model emits the
    properties in schema order.
    """

    decision: Decision
    policy: PolicyCode | None
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    rationale: Annotated[str, Field(min_length=1, max_length=MAX_RATIONALE_CHARS)]
    evidence: Annotated[list[EvidenceItem], Field(max_length=MAX_EVIDENCE_ITEMS)]
    recommended_action: Action


# --- the JSON schema sent as the response format ------------------------------------------

_DROPPED_KEYWORDS = frozenset({"title", "discriminator", "default", "description"})


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    """Resolve ``$ref``s, turn ``oneOf`` into ``anyOf`` and drop annotation-only keywords.

    ``oneOf`` and ``anyOf`` accept the same documents here because the evidence variants are
    told apart by their ``kind`` constant; ``anyOf`` is the one both OpenAI strict mode and
    llama.cpp's grammar converter accept.
    """
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _inline(defs[name], defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS or key == "$defs":
            continue
        if key == "properties":
            out[key] = {prop: _inline(sub, defs) for prop, sub in value.items()}
        elif key == "oneOf":
            out["anyOf"] = _inline(value, defs)
        elif key == "const":
            # ``enum`` with one member is understood by more grammar converters than ``const``.
            out["enum"] = [value]
        else:
            out[key] = _inline(value, defs)
    return out


@lru_cache(maxsize=1)
def _base_schema() -> dict[str, Any]:
    raw = Verdict.model_json_schema()
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    return schema


def _context_ids(context: Mapping[str, Any]) -> dict[str, list[str]]:
    """The ids each evidence kind may cite, in context order, without duplicates."""
    listing = context.get("listing") or {}
    seller = context.get("seller") or {}
    ids = {
        "image": [str(image["id"]) for image in listing.get("images") or []],
        "similar_case": [str(case["case_id"]) for case in context.get("similar_cases") or []],
        "seller_fact": [str(key) for key in (seller.get("facts") or {})],
        "hash_match": [str(match["match_id"]) for match in context.get("hash_matches") or []],
    }
    return {kind: list(dict.fromkeys(values)) for kind, values in ids.items()}


_SEGMENT_BREAK = re.compile(r"(?<=[.!?;])\s+|\n+")
MAX_QUOTE_CHOICES = 40


def listing_segments(listing: Mapping[str, Any]) -> list[str]:
    """The spans of the listing a grammar-constrained model may quote: the title and the
    description's sentences (lines, or pieces cut at word boundaries when longer than a
    quote may be), in order, without duplicates."""
    segments: list[str] = []
    for field in ("title", "description"):
        for piece in _SEGMENT_BREAK.split(str(listing.get(field) or "")):
            piece = " ".join(piece.split())
            while len(piece) > MAX_QUOTE_CHARS:
                cut = piece.rfind(" ", 0, MAX_QUOTE_CHARS + 1)
                cut = cut if cut >= MIN_QUOTE_CHARS else MAX_QUOTE_CHARS
                segments.append(piece[:cut].strip())
                piece = piece[cut:].strip()
            segments.append(piece)
    usable = [seg for seg in segments if len(seg) >= MIN_QUOTE_CHARS]
    return list(dict.fromkeys(usable))[:MAX_QUOTE_CHOICES]


def _by_decision(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema split into one variant per decision, so that a grammar keeps the verdict
    coherent: a violation names a policy, cites evidence and recommends remove or warn; a
    no-violation names no policy and recommends nothing; an uncertain verdict may warn."""
    properties = schema["properties"]
    policy_codes = properties["policy"]["anyOf"][0]
    rules = {
        "violation": (policy_codes, ["remove", "warn"], 1),
        "no_violation": ({"type": "null"}, ["none"], 0),
        "uncertain": (properties["policy"], ["warn", "none"], 0),
    }
    variants = []
    for decision, (policy, actions, min_evidence) in rules.items():
        variant = copy.deepcopy(schema)
        props = variant["properties"]
        props["decision"] = {"type": "string", "enum": [decision]}
        props["policy"] = copy.deepcopy(policy)
        props["recommended_action"] = {"type": "string", "enum": actions}
        if min_evidence:
            props["evidence"]["minItems"] = min_evidence
        variants.append(variant)
    return {"anyOf": variants}


def verdict_json_schema(
    context: VerdictContext | Mapping[str, Any] | None = None, *, by_decision: bool = False
) -> dict[str, Any]:
    """The verdict's JSON schema, derived from ``Verdict``.

    With a context, it is narrowed to what the context holds: each id field becomes an
    ``enum`` of the ids present, a quote becomes an ``enum`` of the listing's sentences
    (``listing_segments``), and evidence kinds with nothing to cite are removed. With
    ``by_decision`` the root becomes one variant per decision (see ``_by_decision``): a form
    for grammar-constrained servers, since OpenAI's strict mode wants an object at the root.
    Every document valid under a narrowed or split schema is valid under the base schema.
    """
    schema = copy.deepcopy(_base_schema())
    if context is not None:
        ids = _context_ids(context)
        ids["listing_text"] = listing_segments(context.get("listing") or {})
        items = schema["properties"]["evidence"]["items"]
        variants = []
        for variant in items["anyOf"]:
            kind = variant["properties"]["kind"]["enum"][0]
            field = EVIDENCE_KINDS[kind][1]
            allowed = [value for value in ids[kind] if 0 < len(value) <= MAX_ID_CHARS]
            if kind == "listing_text":
                allowed = ids[kind]
            if not allowed:
                continue
            variant["properties"][field] = {"type": "string", "enum": allowed}
            variants.append(variant)
        items["anyOf"] = variants
    return _by_decision(schema) if by_decision else schema


# --- checks against the context ------------------------------------------------------------

_QUOTE_TRIM = " \t\r\n\"'`\u201c\u201d\u2018\u2019\u2026."
_WHITESPACE = re.compile(r"\s")


def _fold(text: str) -> tuple[str, list[int]]:
    """Lower-case ``text`` and collapse whitespace runs to one space.

    Returns the folded text and, for each of its characters, the index of the original
    character it came from, so a match in the folded text maps back to original offsets.
    """
    chars: list[str] = []
    origin: list[int] = []
    previous_space = False
    for index, char in enumerate(text):
        if _WHITESPACE.match(char):
            if previous_space:
                continue
            chars.append(" ")
            origin.append(index)
            previous_space = True
            continue
        previous_space = False
        for folded in char.lower():
            chars.append(folded)
            origin.append(index)
    return "".join(chars), origin


@dataclass(frozen=True)
class QuoteLocation:
    """Where a quoted span sits in the listing: ``field`` is ``title`` or ``description``."""

    field: str
    start: int
    end: int


def locate_quote(quote: str, listing: Mapping[str, Any]) -> QuoteLocation | None:
    """Find a quoted span in the listing's title or description.

    Matching ignores case, whitespace runs, surrounding quote marks and HTML escaping (the
    prompt shows the listing HTML-escaped, so a model may quote ``&lt;`` for ``<``). Offsets
    are character offsets into the original field.
    """
    needle, _ = _fold(html.unescape(quote).strip(_QUOTE_TRIM))
    needle = needle.strip()
    if len(needle) < MIN_QUOTE_CHARS:
        return None
    for field in ("title", "description"):
        text = listing.get(field) or ""
        folded, origin = _fold(text)
        position = folded.find(needle)
        if position >= 0:
            end_char = origin[position + len(needle) - 1]
            return QuoteLocation(field=field, start=origin[position], end=end_char + 1)
    return None


def validate_against_context(
    verdict: Verdict, context: VerdictContext | Mapping[str, Any]
) -> list[str]:
    """Problems that make the verdict unusable for this context; an empty list means none.

    Evidence must cite things that exist in the context: quoted spans must occur in the
    listing's title or description, image, similar-case, seller-fact and hash-match ids must be
    among those the prompt showed. The decision must also be coherent: a violation names a
    policy and cites at least one piece of evidence, an uncertain verdict cannot recommend
    removal, and a no-violation verdict cannot recommend removing or warning.
    """
    problems: list[str] = []
    ids = {kind: set(values) for kind, values in _context_ids(context).items()}
    listing = context.get("listing") or {}
    for position, item in enumerate(verdict.evidence):
        field = EVIDENCE_KINDS[item.kind][1]
        value = getattr(item, field)
        if item.kind == "listing_text":
            if locate_quote(value, listing) is None:
                problems.append(f"evidence[{position}]: quote {value!r} is not in the listing text")
        elif value not in ids[item.kind]:
            problems.append(
                f"evidence[{position}]: {item.kind} {field} {value!r} is not in the context"
            )
    if verdict.decision == "violation":
        if verdict.policy is None:
            problems.append("decision 'violation' names no policy")
        if not verdict.evidence:
            problems.append("decision 'violation' cites no evidence")
    if verdict.decision == "uncertain" and verdict.recommended_action == "remove":
        problems.append("decision 'uncertain' recommends 'remove'; only a violation may")
    if verdict.decision == "no_violation" and verdict.recommended_action != "none":
        problems.append(
            f"decision 'no_violation' recommends {verdict.recommended_action!r}, expected 'none'"
        )
    return problems


def verdict_record(verdict: Verdict, context: VerdictContext | Mapping[str, Any]) -> dict[str, Any]:
    """The verdict as a JSON-able dict for storage, with quoted spans located.

    Each ``listing_text`` evidence item gains ``field``, ``start`` and ``end`` (character
    offsets into that field, end exclusive) so the review page can highlight the span.
    """
    record = verdict.model_dump(mode="json")
    listing = context.get("listing") or {}
    for item in record["evidence"]:
        if item["kind"] == "listing_text":
            location = locate_quote(item["quote"], listing)
            if location is not None:
                item.update(field=location.field, start=location.start, end=location.end)
    return record
