"""The shape of the context a verdict is built from and checked against.

The Django side gathers a ``VerdictContext`` for a case (plain dicts and lists, no models);
``llm_verify.prompt`` renders it and ``llm_verify.verdict`` checks a verdict's citations
against it. It lives in its own module, below both, so neither has to import the other for it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class ImageContext(TypedDict):
    id: str  # the image id the verdict may cite
    note: NotRequired[str]  # e.g. "image score firearms 0.88; heatmap peaks on the object"


class ListingContext(TypedDict):
    id: str
    title: str
    description: str
    price: NotRequired[str]  # display form, e.g. "120.00 EUR"
    category: NotRequired[str]
    region: NotRequired[str]
    language: NotRequired[str]
    images: list[ImageContext]


class DetectionContext(TypedDict):
    model: str
    model_version: str
    scores: dict[str, float]  # policy code -> calibrated probability
    modality_scores: NotRequired[dict[str, dict[str, float]]]  # text|image|behavior -> scores
    reason_codes: list[str]


class SimilarCaseContext(TypedDict):
    case_id: str  # the id the verdict may cite
    similarity: float  # cosine similarity, 0..1
    policy: str | None  # policy code of the past decision, None when cleared
    decision: str  # the past decision: "violation" or "no_violation"
    action: NotRequired[str]  # "remove", "warn", "none"
    title: NotRequired[str]  # the similar listing's title (untrusted, escaped)


class HashMatchContext(TypedDict):
    match_id: str  # the id the verdict may cite
    image_id: str  # which of this listing's images matched
    distance: int  # Hamming distance of the perceptual hashes; 0 is an exact match
    policy: str | None  # policy of the known-bad image
    decision: NotRequired[str]


class SellerContext(TypedDict):
    id: str
    # fact key -> value, e.g. {"account_age_days": 3, "prior_violations": 2, "country": "DE"};
    # the keys are what a verdict cites as seller facts.
    facts: dict[str, str | int | float | bool]


class PolicyContext(TypedDict):
    code: str  # the policy under review: the one the detection tier flagged
    guideline: str  # the policy's guideline text, written by policy admins


class VerdictContext(TypedDict):
    """Everything the verdict may rest on; lists may be empty, never missing."""

    listing: ListingContext
    detection: DetectionContext
    similar_cases: list[SimilarCaseContext]
    hash_matches: list[HashMatchContext]
    seller: SellerContext
    policy: PolicyContext
