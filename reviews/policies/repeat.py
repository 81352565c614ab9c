"""Repeat-offence rules, per policy, versioned with the ladder (`LadderVersion.repeat_rules`).

Strikes (DSA Art. 23): every removal or warning a decision enforces under a policy is a strike of
`strike_weight` against the seller, active for `strike_window_days`. The seller's active weight
(all policies, each strike with its own expiry) climbs the steps:

    warn_at      when a strike brings the active weight to at least this and the seller has no
                 standing warning, the decision also warns the seller (0: never);
    suspend_at   at least this active weight proposes a suspension (0: never);
    suspend_share
                 a share in (0, 1] of the seller's listings carrying an active strike also proposes
                 one (0: off), once there are at least two strikes.

A proposal opens the case in the escalation queue; only a person suspends, and only a seller who
was warned first (delivered, not withdrawn): reviews.appeals.strikes.

`known_bad` is what a re-upload of an image from a confirmed violation of the policy does:
`review_top` (to the top of the human queue, reopened if the ladder had closed it), `auto_remove`
(an automatic removal when nobody decided it yet) or `show` (evidence on the case only).
"""

from typing import Any

from detection.policies import POLICY_CODES

KNOWN_BAD_CHOICES = ("review_top", "auto_remove", "show")
FIELDS = (
    "strike_weight",
    "strike_window_days",
    "warn_at",
    "suspend_at",
    "suspend_share",
    "known_bad",
)
DEFAULT_RULES: dict[str, Any] = {
    "strike_weight": 1,
    "strike_window_days": 90,
    "warn_at": 1,
    "suspend_at": 3,
    "suspend_share": 0.0,
    "known_bad": "review_top",
}
INT_LIMITS = {
    "strike_weight": (0, 10),
    "strike_window_days": (1, 730),
    "warn_at": (0, 100),
    "suspend_at": (0, 100),
}


def default_rules() -> dict[str, dict[str, Any]]:
    return {code: dict(DEFAULT_RULES) for code in POLICY_CODES}


class RepeatRulesError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def rules_validate(rules: object) -> dict[str, dict[str, Any]]:
    """Check every policy's rules; return them normalised."""
    if not isinstance(rules, dict):
        raise RepeatRulesError(["the repeat rules must map policy codes to their rules"])
    problems: list[str] = []
    unknown = set(rules) - set(POLICY_CODES)
    if unknown:
        problems.append(f"unknown policy codes: {', '.join(sorted(map(str, unknown)))}")
    out: dict[str, dict[str, Any]] = {}
    for code in POLICY_CODES:
        row = rules.get(code)
        if not isinstance(row, dict):
            problems.append(f"{code}: missing")
            continue
        extra = set(row) - set(FIELDS)
        if extra:
            problems.append(f"{code}: unknown fields {', '.join(sorted(map(str, extra)))}")
        clean: dict[str, Any] = {}
        for key, (low, high) in INT_LIMITS.items():
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{code}.{key}: must be a whole number from {low} to {high}")
                continue
            clean[key] = value
        share = row.get("suspend_share")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            problems.append(f"{code}.suspend_share: must be a number in [0, 1]")
        else:
            clean["suspend_share"] = round(float(share), 4)
        if row.get("known_bad") not in KNOWN_BAD_CHOICES:
            problems.append(f"{code}.known_bad: one of {', '.join(KNOWN_BAD_CHOICES)}")
        else:
            clean["known_bad"] = row["known_bad"]
        warn, suspend = clean.get("warn_at"), clean.get("suspend_at")
        if warn is not None and suspend:
            if warn == 0:
                problems.append(
                    f"{code}: suspension needs a prior warning, so warn_at cannot be 0 when "
                    "suspend_at is set"
                )
            elif warn >= suspend:
                problems.append(
                    f"{code}: warn_at ({warn}) must be below suspend_at ({suspend}): "
                    "a seller is warned before a suspension is proposed"
                )
        out[code] = clean
    if problems:
        raise RepeatRulesError(problems)
    return out


def rules_for(ladder, policy: str) -> dict[str, Any]:
    """One policy's rules in a ladder version (defaults for what it does not say)."""
    return {**DEFAULT_RULES, **(getattr(ladder, "repeat_rules", None) or {}).get(policy, {})}


def rules_diff(old: dict, new: dict) -> list[str]:
    return [
        f"{code}.{key}"
        for code in POLICY_CODES
        for key in FIELDS
        if (old or {}).get(code, {}).get(key) != (new or {}).get(code, {}).get(key)
    ]
