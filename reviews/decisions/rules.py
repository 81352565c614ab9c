"""What makes a decision well-formed, in one place: the API, the pages and QA corrections all
check it here."""

from detection.policies import POLICY_CODES
from reviews.decisions.models import Decision

MAX_NOTES = 5000


def decision_problems(
    *, verdict: str, policy: str | None, action: str, notes: str = "", notes_required: bool = False
) -> dict[str, str]:
    """Field → problem; empty when the decision is well-formed."""
    problems: dict[str, str] = {}
    if verdict not in Decision.Verdict.values:
        problems["verdict"] = "Choose violation or no_violation."
    if action not in Decision.Action.values:
        problems["action"] = "Choose an action: remove, warn or none."
    if verdict == Decision.Verdict.VIOLATION:
        if policy not in POLICY_CODES:
            problems["policy"] = "A violation needs the policy it breaks."
        if action == Decision.Action.NONE:
            problems["action"] = "A violation needs an action: remove or warn."
    elif verdict == Decision.Verdict.NO_VIOLATION and action != Decision.Action.NONE:
        problems["action"] = "No violation means no action ('none')."
    if len(notes) > MAX_NOTES:
        problems["notes"] = f"At most {MAX_NOTES} characters."
    elif notes_required and len(notes.strip()) < 3:
        problems["notes"] = "Say what was wrong (at least 3 characters)."
    return problems


def normalised_policy(*, verdict: str, policy: str | None) -> str | None:
    """No violation breaks no policy."""
    return policy if verdict == Decision.Verdict.VIOLATION else None
