"""The statement-of-reasons mapping, versioned with the ladder: for each policy code, the EU DSA
Transparency Database category, keywords and decision ground a restriction under it is filed with,
and the explanation text policy admins wrote for it.

A mapping is stored on each `LadderVersion` (`statement_mapping`): a draft's is edited, a
published one never changes, and every statement says which ladder version it was written under.
The vocabulary below is the Transparency Database's (its statement API's field values).
"""

from typing import Any

from detection.policies import POLICY_CODES

GROUND_ILLEGAL = "DECISION_GROUND_ILLEGAL_CONTENT"
GROUND_INCOMPATIBLE = "DECISION_GROUND_INCOMPATIBLE_CONTENT"
GROUNDS = (GROUND_ILLEGAL, GROUND_INCOMPATIBLE)

CATEGORIES = (
    "STATEMENT_CATEGORY_ANIMAL_WELFARE",
    "STATEMENT_CATEGORY_DATA_PROTECTION_AND_PRIVACY_VIOLATIONS",
    "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "STATEMENT_CATEGORY_INTELLECTUAL_PROPERTY_INFRINGEMENTS",
    "STATEMENT_CATEGORY_NEGATIVE_EFFECTS_ON_CIVIC_DISCOURSE_OR_ELECTIONS",
    "STATEMENT_CATEGORY_NON_CONSENSUAL_BEHAVIOUR",
    "STATEMENT_CATEGORY_PORNOGRAPHY_OR_SEXUALIZED_CONTENT",
    "STATEMENT_CATEGORY_PROTECTION_OF_MINORS",
    "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
    "STATEMENT_CATEGORY_SCAMS_AND_FRAUD",
    "STATEMENT_CATEGORY_SELF_HARM",
    "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE",
    "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS",
    "STATEMENT_CATEGORY_VIOLENCE",
)

KEYWORDS = (
    "KEYWORD_ANIMAL_HARM",
    "KEYWORD_ADULT_SEXUAL_MATERIAL",
    "KEYWORD_AGE_SPECIFIC_RESTRICTIONS_MINORS",
    "KEYWORD_AGE_SPECIFIC_RESTRICTIONS",
    "KEYWORD_BIOMETRIC_DATA_BREACH",
    "KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL",
    "KEYWORD_CONTENT_PROMOTING_EATING_DISORDERS",
    "KEYWORD_COORDINATED_HARM",
    "KEYWORD_COPYRIGHT_INFRINGEMENT",
    "KEYWORD_DANGEROUS_TOYS",
    "KEYWORD_DATA_FALSIFICATION",
    "KEYWORD_DEFAMATION",
    "KEYWORD_DESIGN_INFRINGEMENT",
    "KEYWORD_DISCRIMINATION",
    "KEYWORD_DISINFORMATION",
    "KEYWORD_FOREIGN_INFORMATION_MANIPULATION",
    "KEYWORD_GENDER_BASED_VIOLENCE",
    "KEYWORD_GEOGRAPHIC_INDICATIONS_INFRINGEMENT",
    "KEYWORD_GEOGRAPHICAL_REQUIREMENTS",
    "KEYWORD_GOODS_SERVICES_NOT_PERMITTED",
    "KEYWORD_GROOMING_SEXUAL_ENTICEMENT_MINORS",
    "KEYWORD_HATE_SPEECH",
    "KEYWORD_HUMAN_EXPLOITATION",
    "KEYWORD_HUMAN_TRAFFICKING",
    "KEYWORD_ILLEGAL_ORGANIZATIONS",
    "KEYWORD_IMAGE_BASED_SEXUAL_ABUSE",
    "KEYWORD_IMPERSONATION_ACCOUNT_HIJACKING",
    "KEYWORD_INAUTHENTIC_ACCOUNTS",
    "KEYWORD_INAUTHENTIC_LISTINGS",
    "KEYWORD_INAUTHENTIC_USER_REVIEWS",
    "KEYWORD_INCITEMENT_VIOLENCE_HATRED",
    "KEYWORD_INSUFFICIENT_INFORMATION_TRADERS",
    "KEYWORD_LANGUAGE_REQUIREMENTS",
    "KEYWORD_MISINFORMATION",
    "KEYWORD_MISSING_PROCESSING_GROUND",
    "KEYWORD_NON_CONSENSUAL_IMAGE_SHARING",
    "KEYWORD_NON_CONSENSUAL_ITEMS_DEEPFAKE",
    "KEYWORD_NUDITY",
    "KEYWORD_ONLINE_BULLYING_INTIMIDATION",
    "KEYWORD_PATENT_INFRINGEMENT",
    "KEYWORD_PHISHING",
    "KEYWORD_PYRAMID_SCHEMES",
    "KEYWORD_REGULATED_GOODS_SERVICES",
    "KEYWORD_RIGHT_TO_BE_FORGOTTEN",
    "KEYWORD_RISK_ENVIRONMENTAL_DAMAGE",
    "KEYWORD_RISK_PUBLIC_HEALTH",
    "KEYWORD_SELF_MUTILATION",
    "KEYWORD_STALKING",
    "KEYWORD_SUICIDE",
    "KEYWORD_TERRORIST_CONTENT",
    "KEYWORD_TRADE_SECRET_INFRINGEMENT",
    "KEYWORD_TRADEMARK_INFRINGEMENT",
    "KEYWORD_UNLAWFUL_SALE_ANIMALS",
    "KEYWORD_UNSAFE_CHALLENGES",
)

# The EU member states and the other EEA countries (Iceland, Liechtenstein, Norway).
EU_COUNTRIES = [
    "AT",
    "BE",
    "BG",
    "CY",
    "CZ",
    "DE",
    "DK",
    "EE",
    "ES",
    "FI",
    "FR",
    "GR",
    "HR",
    "HU",
    "IE",
    "IT",
    "LT",
    "LU",
    "LV",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SE",
    "SI",
    "SK",
]
EEA_COUNTRIES = (*EU_COUNTRIES, "IS", "LI", "NO")

MAX_GROUND = 500  # the Transparency Database's limits
MAX_EXPLANATION = 1500  # of its 2000: the statement appends the ladder version and policy
MAX_KEYWORDS = 5

POLICY_FIELDS = ("decision_ground", "category", "category_specification", "ground", "explanation")

DEFAULT_MAPPING: dict[str, Any] = {
    "territorial_scope": list(EEA_COUNTRIES),
    "policies": {
        "firearms": {
            "decision_ground": GROUND_ILLEGAL,
            "category": "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS",
            "category_specification": ["KEYWORD_REGULATED_GOODS_SERVICES"],
            "ground": "National law on the acquisition and possession of firearms, "
            "implementing Directive (EU) 2021/555; marketplace prohibited-items policy.",
            "explanation": "The listing offers a firearm, firearm part or ammunition. Selling "
            "these without the licensed-dealer channel the law requires is prohibited.",
        },
        "drugs": {
            "decision_ground": GROUND_ILLEGAL,
            "category": "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS",
            "category_specification": ["KEYWORD_REGULATED_GOODS_SERVICES"],
            "ground": "National narcotics and medicines law (controlled substances and "
            "prescription-only medicines); marketplace prohibited-items policy.",
            "explanation": "The listing offers a controlled substance or a prescription-only "
            "medicine outside a lawful prescription channel.",
        },
        "counterfeit": {
            "decision_ground": GROUND_ILLEGAL,
            "category": "STATEMENT_CATEGORY_INTELLECTUAL_PROPERTY_INFRINGEMENTS",
            "category_specification": ["KEYWORD_TRADEMARK_INFRINGEMENT"],
            "ground": "Regulation (EU) 2017/1001 on the EU trade mark and national trade mark "
            "law; marketplace counterfeit policy.",
            "explanation": "The listing offers goods bearing a protected trade mark without the "
            "right holder's consent (counterfeit goods).",
        },
        "stolen_goods": {
            "decision_ground": GROUND_INCOMPATIBLE,
            "category": "STATEMENT_CATEGORY_SCAMS_AND_FRAUD",
            "category_specification": ["KEYWORD_GOODS_SERVICES_NOT_PERMITTED"],
            "ground": "Marketplace terms of service: stolen and unverifiable-provenance goods.",
            "explanation": "The listing shows the marks of stolen goods (for example removed "
            "serial numbers, locked devices or goods reported stolen) which the terms of "
            "service do not allow to be sold.",
            "incompatible_content_illegal": "Yes",
        },
        "human_trafficking": {
            "decision_ground": GROUND_ILLEGAL,
            "category": "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
            "category_specification": ["KEYWORD_HUMAN_TRAFFICKING", "KEYWORD_HUMAN_EXPLOITATION"],
            "ground": "Directive 2011/36/EU on preventing and combating trafficking in human "
            "beings, as implemented in national criminal law.",
            "explanation": "The listing offers, recruits or advertises people for exploitation.",
        },
        "scam": {
            "decision_ground": GROUND_INCOMPATIBLE,
            "category": "STATEMENT_CATEGORY_SCAMS_AND_FRAUD",
            "category_specification": ["KEYWORD_INAUTHENTIC_LISTINGS", "KEYWORD_PHISHING"],
            "ground": "Marketplace terms of service: fraudulent and deceptive listings.",
            "explanation": "The listing is deceptive: it offers goods that are not as described "
            "or asks buyers to pay or communicate outside the marketplace.",
            "incompatible_content_illegal": "No",
        },
    },
}


class MappingError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _text(problems: list[str], where: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or len(value.strip()) < 10:
        problems.append(f"{where}: write at least 10 characters")
        return ""
    if len(value) > limit:
        problems.append(f"{where}: at most {limit} characters")
    if "\x00" in value:
        problems.append(f"{where}: contains a NUL character")
    return value.strip()


def mapping_validate(mapping: object) -> dict[str, Any]:
    """Check a whole mapping; return it normalised, or raise MappingError with every problem."""
    problems: list[str] = []
    if not isinstance(mapping, dict):
        raise MappingError(["the mapping must be an object with territorial_scope and policies"])
    extra = set(mapping) - {"territorial_scope", "policies"}
    if extra:
        problems.append(f"unknown keys: {', '.join(sorted(map(str, extra)))}")
    scope = mapping.get("territorial_scope")
    if not isinstance(scope, list) or not scope:
        problems.append("territorial_scope: name at least one EU/EEA country")
        scope = []
    bad = [c for c in scope if c not in EEA_COUNTRIES]
    if bad:
        problems.append(f"territorial_scope: not EU/EEA country codes: {', '.join(map(str, bad))}")
    policies = mapping.get("policies")
    if not isinstance(policies, dict):
        problems.append("policies: must map each policy code to its statement fields")
        policies = {}
    unknown = set(policies) - set(POLICY_CODES)
    if unknown:
        problems.append(f"policies: unknown policy codes {', '.join(sorted(map(str, unknown)))}")
    out_policies: dict[str, dict[str, Any]] = {}
    for code in POLICY_CODES:
        row = policies.get(code)
        if not isinstance(row, dict):
            problems.append(f"{code}: missing")
            continue
        extra = set(row) - {*POLICY_FIELDS, "incompatible_content_illegal"}
        if extra:
            problems.append(f"{code}: unknown fields {', '.join(sorted(map(str, extra)))}")
        clean: dict[str, Any] = {}
        ground = row.get("decision_ground")
        if ground not in GROUNDS:
            problems.append(f"{code}.decision_ground: one of {', '.join(GROUNDS)}")
        clean["decision_ground"] = ground
        if row.get("category") not in CATEGORIES:
            problems.append(f"{code}.category: not a Transparency Database category")
        clean["category"] = row.get("category")
        keywords = row.get("category_specification") or []
        if not isinstance(keywords, list) or any(k not in KEYWORDS for k in keywords):
            problems.append(f"{code}.category_specification: Transparency Database keywords only")
            keywords = []
        if len(keywords) > MAX_KEYWORDS:
            problems.append(f"{code}.category_specification: at most {MAX_KEYWORDS} keywords")
        clean["category_specification"] = list(dict.fromkeys(keywords))
        clean["ground"] = _text(problems, f"{code}.ground", row.get("ground"), MAX_GROUND)
        clean["explanation"] = _text(
            problems, f"{code}.explanation", row.get("explanation"), MAX_EXPLANATION
        )
        if ground == GROUND_INCOMPATIBLE:
            illegal = row.get("incompatible_content_illegal", "No")
            if illegal not in ("Yes", "No"):
                problems.append(f"{code}.incompatible_content_illegal: Yes or No")
            clean["incompatible_content_illegal"] = illegal
        out_policies[code] = clean
    if problems:
        raise MappingError(problems)
    return {"territorial_scope": list(dict.fromkeys(scope)), "policies": out_policies}


def mapping_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Readable changes between two mappings, for the audit log and the draft page."""
    changes = []
    if old.get("territorial_scope") != new.get("territorial_scope"):
        changes.append("territorial scope changed")
    for code in POLICY_CODES:
        before = old.get("policies", {}).get(code, {})
        after = new.get("policies", {}).get(code, {})
        for key in (*POLICY_FIELDS, "incompatible_content_illegal"):
            if before.get(key) != after.get(key):
                changes.append(f"{code}.{key} changed")
    return changes
