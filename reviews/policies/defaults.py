"""What a new installation starts with: the six policies and ladder version 1 (from the seeds:
below 0.30 allow, 0.30-0.50 monitor, 0.50-0.95 review, at or above 0.95 automatic removal)."""

from reviews.policies.ladder import DEFAULT_POLICY

POLICIES = [
    # code, name, severity (1-5), SLA hours, guideline
    (
        "human_trafficking",
        "Human trafficking",
        5,
        1,
        "Listings that offer, recruit or advertise people for exploitation, forced labour or sex "
        "work, "
        "including coded job offers with travel and housing 'included' and identity documents "
        "held.",
    ),
    (
        "firearms",
        "Firearms and weapons",
        5,
        4,
        "Real firearms, their parts (receivers, barrels, auto sears), ammunition, and 3D-print "
        "files. "
        "Not violating: water guns, toy blasters, airsoft with orange tips where legal, holsters, "
        "power tools such as nail guns.",
    ),
    (
        "drugs",
        "Drugs and paraphernalia",
        4,
        4,
        "Controlled substances, prescription drugs without a prescription channel, and obfuscated "
        "offers of them (emoji codes, misspellings). Not violating: legal supplements, kitchen "
        "herbs.",
    ),
    (
        "stolen_goods",
        "Stolen goods",
        3,
        12,
        "Items offered with signs of theft: locked or blacklisted devices, removed serial numbers, "
        "'no box no questions', far below market price with urgency.",
    ),
    (
        "scam",
        "Scams and fraud",
        3,
        8,
        "Listings that take payment without delivering: off-platform payment demands, advance "
        "fees, "
        "fake tickets, impossible prices, copied photos.",
    ),
    (
        "counterfeit",
        "Counterfeit goods",
        2,
        24,
        "Replicas of branded goods ('AAA quality', 'mirror copy', '1:1'), fake certificates of "
        "authenticity. Not violating: genuine second-hand branded goods, unbranded look-alikes.",
    ),
]


def default_ladder() -> dict:
    return {
        code: {**DEFAULT_POLICY, "severity": severity, "sla_hours": sla_hours}
        for code, _name, severity, sla_hours, _guideline in POLICIES
    }


SENIOR_GROUP = "senior_moderator"

QUEUES = [
    # slug, name, kind, policies, roles, groups
    ("all", "All policies", "review", [], ["moderator"], []),
    (
        "high-harm",
        "High harm: trafficking and firearms",
        "review",
        ["human_trafficking", "firearms"],
        ["moderator"],
        [],
    ),
    ("drugs", "Drugs", "review", ["drugs"], ["moderator"], []),
    (
        "goods",
        "Counterfeit and stolen goods",
        "review",
        ["counterfeit", "stolen_goods"],
        ["moderator"],
        [],
    ),
    ("scam", "Scams", "review", ["scam"], ["moderator"], []),
    (
        "escalations",
        "Escalations and suspensions (senior)",
        "escalation",
        [],
        ["moderator"],
        [SENIOR_GROUP],
    ),
]
