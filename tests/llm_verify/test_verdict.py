from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from llm_verify.verdict import (
    MAX_QUOTE_CHARS,
    MAX_RATIONALE_CHARS,
    POLICY_CODES,
    Verdict,
    listing_segments,
    locate_quote,
    validate_against_context,
    verdict_json_schema,
    verdict_record,
)


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_schema_is_strict_and_flat():
    schema = verdict_json_schema()
    text = json.dumps(schema)
    for keyword in ("$ref", "$defs", "oneOf", "discriminator", "title"):
        assert keyword not in text
    objects = [node for node in _walk(schema) if node.get("type") == "object"]
    assert len(objects) == 6  # the verdict and its five evidence kinds
    for node in objects:
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    assert list(schema["properties"]) == [
        "decision",
        "policy",
        "confidence",
        "rationale",
        "evidence",
        "recommended_action",
    ]
    assert schema["properties"]["policy"]["anyOf"] == [
        {"enum": list(POLICY_CODES), "type": "string"},
        {"type": "null"},
    ]


def test_good_verdict_matches_schema_and_model(context, good_verdict):
    jsonschema.validate(good_verdict, verdict_json_schema())
    good_verdict["evidence"][0]["quote"] = "Comes with 2 magazines and 50 rounds."
    jsonschema.validate(good_verdict, verdict_json_schema(context))
    jsonschema.validate(good_verdict, verdict_json_schema(context, by_decision=True))
    verdict = Verdict.model_validate(good_verdict)
    assert validate_against_context(verdict, context) == []


def test_narrowed_schema_lists_only_context_ids(context, good_verdict):
    schema = verdict_json_schema(context)
    variants = {
        v["properties"]["kind"]["enum"][0]: v["properties"]
        for v in schema["properties"]["evidence"]["items"]["anyOf"]
    }
    assert variants["image"]["image_id"] == {"type": "string", "enum": ["img-1", "img-2"]}
    assert variants["similar_case"]["case_id"]["enum"] == ["case-1042", "case-877"]
    assert variants["seller_fact"]["fact"]["enum"] == [
        "account_age_days",
        "prior_violations",
        "country",
    ]
    assert variants["hash_match"]["match_id"]["enum"] == ["hm-77"]
    assert variants["listing_text"]["quote"]["enum"] == [
        "Glock 19 Gen5 pistol, barely used",
        "Selling my Glock 19 Gen5 handgun.",
        "Comes with 2 magazines and 50 rounds.",
        "No papers needed, cash only, meet in person.",
    ]

    good_verdict["evidence"][0]["quote"] = "Comes with 2 magazines and 50 rounds."
    jsonschema.validate(good_verdict, schema)
    invented = dict(good_verdict)
    invented["evidence"] = [{"kind": "similar_case", "case_id": "case-9999", "note": "x"}]
    jsonschema.validate(invented, verdict_json_schema())  # the base schema cannot know
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(invented, schema)


def test_narrowed_schema_drops_kinds_with_nothing_to_cite(context):
    context["hash_matches"] = []
    context["listing"]["images"] = []
    kinds = [
        v["properties"]["kind"]["enum"][0]
        for v in verdict_json_schema(context)["properties"]["evidence"]["items"]["anyOf"]
    ]
    assert kinds == ["listing_text", "similar_case", "seller_fact"]
    context["listing"]["title"] = context["listing"]["description"] = ""
    kinds = [
        v["properties"]["kind"]["enum"][0]
        for v in verdict_json_schema(context)["properties"]["evidence"]["items"]["anyOf"]
    ]
    assert kinds == ["similar_case", "seller_fact"]


def test_listing_segments_split_sentences_and_cut_long_ones():
    long_sentence = " ".join(f"word{n:02d}" for n in range(45))  # 314 characters, no break
    listing = {
        "title": "Bike",
        "description": "Blue bike! Barely used? Yes.\n\n"
        f"Pick up only; no shipping. {long_sentence}",
    }
    segments = listing_segments(listing)
    assert segments[:5] == ["Bike", "Blue bike!", "Barely used?", "Yes.", "Pick up only;"]
    assert segments[5] == "no shipping."
    pieces = segments[6:]
    assert all(len(piece) <= MAX_QUOTE_CHARS for piece in pieces)
    assert " ".join(pieces) == long_sentence
    for segment in segments:
        assert locate_quote(segment, listing) is not None


def test_decision_variants_keep_the_verdict_coherent(context, good_verdict):
    schema = verdict_json_schema(context, by_decision=True)
    decisions = [v["properties"]["decision"]["enum"] for v in schema["anyOf"]]
    assert decisions == [["violation"], ["no_violation"], ["uncertain"]]
    good_verdict["evidence"][0]["quote"] = "Comes with 2 magazines and 50 rounds."
    base = verdict_json_schema(context)
    for incoherent in (
        {"policy": None},
        {"evidence": []},
        {"recommended_action": "none"},
        {"decision": "no_violation", "recommended_action": "warn", "policy": None},
        {"decision": "no_violation", "recommended_action": "none", "policy": "firearms"},
        {"decision": "uncertain", "recommended_action": "remove"},
    ):
        document = {**good_verdict, **incoherent}
        jsonschema.validate(document, base)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, schema)
    cleared = {
        **good_verdict,
        "decision": "no_violation",
        "policy": None,
        "recommended_action": "none",
        "evidence": [],
    }
    jsonschema.validate(cleared, schema)


@pytest.mark.parametrize(
    "change",
    [
        {"confidence": 1.5},
        {"decision": "maybe"},
        {"policy": "weapons"},
        {"recommended_action": "ban"},
        {"rationale": "x" * (MAX_RATIONALE_CHARS + 1)},
        {"rationale": ""},
        {"extra": "field"},
        {"evidence": [{"kind": "image", "image_id": "img-1", "note": "n", "score": 1}]},
        {"evidence": [{"kind": "video", "video_id": "v1", "note": "n"}]},
        {"evidence": [{"kind": "image", "image_id": "img-1", "note": "n"}] * 5},
    ],
)
def test_model_rejects_what_the_schema_rejects(good_verdict, change):
    bad = {**good_verdict, **change}
    with pytest.raises(ValidationError):
        Verdict.model_validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, verdict_json_schema())


def test_invented_references_are_problems(context, good_verdict):
    good_verdict["evidence"] = [
        {"kind": "similar_case", "case_id": "case-9999", "note": "x"},
        {"kind": "image", "image_id": "img-7", "note": "x"},
        {"kind": "seller_fact", "fact": "is_verified", "note": "x"},
        {"kind": "hash_match", "match_id": "hm-1", "note": "x"},
    ]
    problems = validate_against_context(Verdict.model_validate(good_verdict), context)
    assert problems == [
        "evidence[0]: similar_case case_id 'case-9999' is not in the context",
        "evidence[1]: image image_id 'img-7' is not in the context",
        "evidence[2]: seller_fact fact 'is_verified' is not in the context",
        "evidence[3]: hash_match match_id 'hm-1' is not in the context",
    ]


def test_quote_must_occur_in_the_listing(context, good_verdict):
    good_verdict["evidence"] = [
        {"kind": "listing_text", "quote": "ships worldwide with tracking", "note": "x"}
    ]
    problems = validate_against_context(Verdict.model_validate(good_verdict), context)
    assert problems == [
        "evidence[0]: quote 'ships worldwide with tracking' is not in the listing text"
    ]


def test_quote_matching_tolerates_case_whitespace_quotes_and_escaping(context):
    listing = context["listing"]
    listing["description"] = "Price <500> firm.\n\nNo   papers   needed, cash only."
    location = locate_quote('"no papers needed"', listing)
    assert location is not None
    assert location.field == "description"
    assert listing["description"][location.start : location.end] == "No   papers   needed"
    escaped = locate_quote("Price &lt;500&gt; firm", listing)
    assert escaped is not None
    assert listing["description"][escaped.start : escaped.end] == "Price <500> firm"
    title = locate_quote("GLOCK 19", listing)
    assert (title.field, title.start, title.end) == ("title", 0, 8)
    assert locate_quote("no", listing) is None  # too short to mean anything
    assert locate_quote("papers needed, card only", listing) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"policy": None}, "decision 'violation' names no policy"),
        ({"evidence": []}, "decision 'violation' cites no evidence"),
        (
            {"decision": "no_violation", "policy": None, "recommended_action": "remove"},
            "decision 'no_violation' recommends 'remove', expected 'none'",
        ),
        (
            {"decision": "uncertain", "recommended_action": "remove"},
            "decision 'uncertain' recommends 'remove'; only a violation may",
        ),
    ],
)
def test_incoherent_decisions_are_problems(context, good_verdict, change, problem):
    verdict = Verdict.model_validate({**good_verdict, **change})
    assert validate_against_context(verdict, context) == [problem]


def test_uncertain_without_evidence_is_fine(context):
    verdict = Verdict(
        decision="uncertain",
        policy=None,
        confidence=0.4,
        rationale="Could be a replica.",
        evidence=[],
        recommended_action="none",
    )
    assert validate_against_context(verdict, context) == []


def test_record_locates_quoted_spans(context, good_verdict):
    record = verdict_record(Verdict.model_validate(good_verdict), context)
    quoted = record["evidence"][0]
    description = context["listing"]["description"]
    assert quoted["field"] == "description"
    assert description[quoted["start"] : quoted["end"]] == "Comes with 2 magazines and 50 rounds"
    assert "start" not in record["evidence"][1]
    json.dumps(record)
