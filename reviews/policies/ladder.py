"""The policy ladder: per-policy thresholds, validated, diffed, exported as YAML, backtested.

Per policy, scores climb through the tiers

    allow < monitor ≤ monitor band < review ≤ human review < warn ≤ automatic warning
          < remove ≤ automatic removal,   and at or above `suspend` the seller's account
          suspension goes to a human (suspension always needs a human).

`llm_verify` is the lower bound of the LLM-verifiable band [llm_verify, min(warn, remove)):
only there can an LLM verdict that agrees with the detection tier (at or above
`llm_min_confidence`) take the ladder's action without a human. `qa_rate` is the share of
automatic and LLM-verified decisions sampled for QA spot-checks.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from detection.policies import POLICY_CODES

THRESHOLD_KEYS = ("monitor", "review", "llm_verify", "warn", "remove", "suspend")
FIELDS = (*THRESHOLD_KEYS, "llm_min_confidence", "qa_rate", "severity", "sla_hours")
YAML_KIND = "moderation-portal/policy-ladder"

DEFAULT_POLICY = {
    "monitor": 0.30,
    "review": 0.50,
    "llm_verify": 0.70,
    "warn": 0.95,  # equal to remove: no automatic-warning tier unless an admin opens one
    "remove": 0.95,
    "suspend": 0.99,
    "llm_min_confidence": 0.80,
    "qa_rate": 0.10,  # share of automatic and LLM-verified decisions QA leads spot-check
}


class LadderError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def validate(thresholds: object) -> dict[str, dict[str, Any]]:
    """Check a whole ladder; return it normalised (floats rounded, ints for SLA and severity)."""
    problems: list[str] = []
    if not isinstance(thresholds, dict):
        raise LadderError(["the ladder must map policy codes to their thresholds"])
    unknown = set(thresholds) - set(POLICY_CODES)
    if unknown:
        problems.append(f"unknown policy codes: {', '.join(sorted(map(str, unknown)))}")
    out: dict[str, dict[str, Any]] = {}
    for code in POLICY_CODES:
        row = thresholds.get(code)
        if not isinstance(row, dict):
            problems.append(f"{code}: missing")
            continue
        extra = set(row) - set(FIELDS)
        if extra:
            problems.append(f"{code}: unknown fields {', '.join(sorted(map(str, extra)))}")
        clean: dict[str, Any] = {}
        for key in (*THRESHOLD_KEYS, "llm_min_confidence", "qa_rate"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{code}.{key}: must be a number")
                continue
            if not 0.0 <= float(value) <= 1.0:
                problems.append(f"{code}.{key}: {value} is outside [0, 1]")
                continue
            clean[key] = round(float(value), 4)
        for key, low, high in (("severity", 1, 5), ("sla_hours", 1, 24 * 30)):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{code}.{key}: must be a whole number from {low} to {high}")
                continue
            clean[key] = value
        if all(k in clean for k in THRESHOLD_KEYS):
            order = [clean[k] for k in THRESHOLD_KEYS]
            if order != sorted(order):
                problems.append(
                    f"{code}: thresholds must be ordered monitor ≤ review ≤ llm_verify ≤ warn ≤ "
                    f"remove ≤ suspend "
                    f"(got {', '.join(f'{k} {clean[k]}' for k in THRESHOLD_KEYS)})"
                )
        out[code] = clean
    if problems:
        raise LadderError(problems)
    return out


class Route(StrEnum):
    """Where a flag goes; the one list of route names (cases store them, the
    backtest counts them).
    """

    AUTO_ACTION = "auto_action"
    LLM_VERIFY = "llm_verify"
    HUMAN_REVIEW = "human_review"
    MONITOR = "monitor"
    ALLOW = "allow"


ROUTES: tuple[Route, ...] = tuple(Route)
# Routes that need a person's (or the LLM's) look: the backtest's "human review" figure.
REVIEWED_ROUTES = frozenset({Route.HUMAN_REVIEW, Route.LLM_VERIFY})


@dataclass(frozen=True)
class Routing:
    route: Route
    action: str  # the ladder's action for the tier: remove, warn or none
    suspension_review: bool
    reason: str


def route(score: float, t: dict[str, Any]) -> Routing:
    if score >= t["remove"]:
        suspend = score >= t["suspend"]
        reason = f"score {score:.2f} ≥ remove {t['remove']:.2f}"
        if suspend:
            reason += f"; ≥ suspend {t['suspend']:.2f}, so a human reviews the account"
        return Routing(Route.AUTO_ACTION, "remove", suspend, reason)
    if score >= t["warn"]:
        return Routing(
            Route.AUTO_ACTION, "warn", False, f"score {score:.2f} ≥ warn {t['warn']:.2f}"
        )
    if score >= t["llm_verify"]:
        top = min(t["warn"], t["remove"])
        return Routing(
            Route.LLM_VERIFY,
            "remove",
            False,
            f"score {score:.2f} in the LLM-verifiable band [{t['llm_verify']:.2f}, {top:.2f})",
        )
    if score >= t["review"]:
        return Routing(
            Route.HUMAN_REVIEW, "none", False, f"score {score:.2f} ≥ review {t['review']:.2f}"
        )
    if score >= t["monitor"]:
        return Routing(
            Route.MONITOR, "none", False, f"score {score:.2f} ≥ monitor {t['monitor']:.2f}"
        )
    return Routing(
        Route.ALLOW, "none", False, f"score {score:.2f} below monitor {t['monitor']:.2f}"
    )


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field changes between two ladders."""
    changes = []
    for code in POLICY_CODES:
        for key in FIELDS:
            before, after = old.get(code, {}).get(key), new.get(code, {}).get(key)
            if before != after:
                changes.append({"policy": code, "field": key, "from": before, "to": after})
    return changes


def to_yaml(*, thresholds: dict[str, Any], version: int | None, notes: str = "") -> str:
    document = {
        "kind": YAML_KIND,
        "version": version,
        "notes": notes,
        "policies": {code: {k: thresholds[code][k] for k in FIELDS} for code in POLICY_CODES},
    }
    header = (
        "# Policy ladder of the moderation portal. Edit and import it as a draft; publishing "
        "makes a new\n"
        "# immutable version. Thresholds are calibrated probabilities in [0, 1], ordered\n"
        "# monitor <= review <= llm_verify <= warn <= remove <= suspend.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


MAX_YAML_BYTES = 64 * 1024


def from_yaml(text: str | bytes) -> tuple[dict[str, dict[str, Any]], str]:
    """Parse an exported ladder (safe loader only), returning (validated thresholds, notes)."""
    if len(text) > MAX_YAML_BYTES:
        raise LadderError([f"the file is over {MAX_YAML_BYTES} bytes"])
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LadderError([f"not valid YAML: {str(exc)[:200]}"]) from exc
    if not isinstance(document, dict) or document.get("kind") != YAML_KIND:
        raise LadderError([f"not a policy ladder file (kind must be {YAML_KIND!r})"])
    notes = document.get("notes") or ""
    if not isinstance(notes, str):
        raise LadderError(["notes must be text"])
    return validate(document.get("policies")), notes[:2000]
