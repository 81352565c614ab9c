"""The policy codes every system agrees on (shared/DESIGN.md, fixed names)."""

POLICY_CODES: tuple[str, ...] = (
    "firearms",
    "drugs",
    "counterfeit",
    "stolen_goods",
    "human_trafficking",
    "scam",
)
MODALITIES: tuple[str, ...] = ("text", "image", "behavior")
