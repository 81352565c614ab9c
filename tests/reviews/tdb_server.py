"""A local stand-in for the Transparency Database's statement API.

The EU DSA Transparency Database (TDB) takes statements of reasons from online platforms. This
module serves its statement endpoints on a real socket (127.0.0.1, a free port) and applies the
validation rules the TDB publishes for them, so the portal's submission client, its HTTP stack,
its timeouts and its error handling meet the same answers they would meet in production:

- ``POST /api/v1/statements`` takes ``{"statements": [...]}`` (1 to 100), validates each one and
  stores all of them or none: one bad statement, or one platform identifier (``puid``) seen
  before or twice in the call, rejects the whole batch with 422.
- ``POST /api/v1/statement`` takes one statement.
- ``GET /api/v1/statement/existing-puid/<puid>`` looks a stored statement up by its ``puid``.
  The TDB answers a hit with status 302 (Found) and the statement as JSON, without a Location
  header; this server does the same (``existing_puid_status`` changes it).

The rules are written here from the TDB's published sources (its Laravel validation rules and
its API documentation), independently of the portal's own code, so that a mistake in the portal
is not repeated here. Where the TDB is looser than its documentation this server is stricter:
a number where text belongs is refused, and strings are not trimmed (the TDB trims leading and
trailing whitespace before validating, so a ``puid`` ending in a newline passes there but is
refused here). Empty strings count as absent, as the TDB's input handling makes them.

Like the TDB (a Laravel application), errors that the framework renders itself, a missing token
or a request-level validation failure, come back as JSON only when the request says it accepts
JSON (``Accept: application/json``, which the TDB's documentation requires); otherwise they are
redirects (302), as a client that forgets the header would see in production.

Tests steer the server through attributes: ``fail_next`` (statuses to answer before anything
else, one per request), ``hang_seconds`` (a delay before each answer), ``stop()`` and
``start()`` (the same port again). ``requests`` records what arrived and ``stored`` holds what
was accepted, keyed by ``puid``; both survive a restart, as the TDB's database would.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

# --- The TDB's vocabularies ------------------------------------------------------------------

DECISION_VISIBILITIES = frozenset(
    {
        "DECISION_VISIBILITY_CONTENT_REMOVED",
        "DECISION_VISIBILITY_CONTENT_DISABLED",
        "DECISION_VISIBILITY_CONTENT_DEMOTED",
        "DECISION_VISIBILITY_CONTENT_AGE_RESTRICTED",
        "DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED",
        "DECISION_VISIBILITY_CONTENT_LABELLED",
        "DECISION_VISIBILITY_OTHER",
    }
)
DECISION_MONETARIES = frozenset(
    {"DECISION_MONETARY_SUSPENSION", "DECISION_MONETARY_TERMINATION", "DECISION_MONETARY_OTHER"}
)
DECISION_PROVISIONS = frozenset(
    {
        "DECISION_PROVISION_PARTIAL_SUSPENSION",
        "DECISION_PROVISION_TOTAL_SUSPENSION",
        "DECISION_PROVISION_PARTIAL_TERMINATION",
        "DECISION_PROVISION_TOTAL_TERMINATION",
    }
)
DECISION_ACCOUNTS = frozenset({"DECISION_ACCOUNT_SUSPENDED", "DECISION_ACCOUNT_TERMINATED"})
ACCOUNT_TYPES = frozenset({"ACCOUNT_TYPE_BUSINESS", "ACCOUNT_TYPE_PRIVATE"})
KEYWORDS = frozenset(
    {
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
        "KEYWORD_OTHER",
    }
)
DECISION_GROUND_ILLEGAL = "DECISION_GROUND_ILLEGAL_CONTENT"
DECISION_GROUND_INCOMPATIBLE = "DECISION_GROUND_INCOMPATIBLE_CONTENT"
DECISION_GROUNDS = frozenset({DECISION_GROUND_ILLEGAL, DECISION_GROUND_INCOMPATIBLE})
YES_NO = frozenset({"Yes", "No"})
CONTENT_TYPES = frozenset(
    {
        "CONTENT_TYPE_APP",
        "CONTENT_TYPE_AUDIO",
        "CONTENT_TYPE_IMAGE",
        "CONTENT_TYPE_PRODUCT",
        "CONTENT_TYPE_SYNTHETIC_MEDIA",
        "CONTENT_TYPE_TEXT",
        "CONTENT_TYPE_VIDEO",
        "CONTENT_TYPE_OTHER",
    }
)
STATEMENT_CATEGORIES = frozenset(
    {
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
    }
)


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The EU member states plus Iceland, Liechtenstein and Norway (the EEA), as the TDB spells them
# (Greece is GR, not the EU's own EL).
EEA_COUNTRIES = _codes(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK"
)
# The 24 official languages of the EU.
EU_LANGUAGES = _codes("BG CS DA DE EL EN ES ET FI FR GA HR HU IT LT LV MT NL PL PT RO SK SL SV")
# Every other ISO 639-1 code, upper case: the TDB accepts them all.
LANGUAGES = EU_LANGUAGES | _codes(
    """
    AA AB AE AF AK AM AN AR AS AV AY AZ BA BE BH BI BM BN BO BR BS CA CE CH CO CR CU CV CY DV
    DZ EE EO EU FA FF FJ FO FY GD GL GN GU GV HA HE HI HO HT HY HZ IA ID IE IG II IK IO IS IU
    JA JV KA KG KI KJ KK KL KM KN KO KR KS KU KV KW KY LA LB LG LI LN LO LU MG MH MI MK ML MN
    MR MS MY NA NB ND NE NG NN NO NR NV NY OC OJ OM OR OS PA PI PS QU RM RN RU RW SA SC SD SE
    SG SI SM SN SO SQ SR SS ST SU SW TA TE TG TH TI TK TL TN TO TR TS TT TW TY UG UK UR UZ VE
    VI VO WA WO XH YI YO ZA ZH ZU
    """
)
SOURCE_TYPES = frozenset(
    {
        "SOURCE_ARTICLE_16",
        "SOURCE_TRUSTED_FLAGGER",
        "SOURCE_TYPE_OTHER_NOTIFICATION",
        "SOURCE_VOLUNTARY",
    }
)
AUTOMATED_DECISIONS = frozenset(
    {"AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_PARTIALLY", "AUTOMATED_DECISION_NOT_AUTOMATED"}
)

MAX_STATEMENTS_PER_CALL = 100
PUID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
URL_SCHEMES = frozenset({"http", "https", "ftp", "ftps"})
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

MESSAGE_SERVER_ERROR = "Server Error"
MESSAGE_UNAUTHENTICATED = "Unauthenticated."
MESSAGE_PUIDS_NOT_UNIQUE = "The platform identifier(s) are not all unique within this call."
MESSAGE_PUID_NOT_UNIQUE = "The identifier given is not unique within this platform."
MESSAGE_NOT_FOUND = "statement of reason not found"


# --- Validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One statement field and the checks the TDB makes on it."""

    name: str
    kind: str  # "text", "choice", "choices" (an array of choices), "date" or "url"
    allowed: frozenset[str] = frozenset()
    required: bool = False
    nullable: bool = False
    max_chars: int | None = None
    earliest: date | None = None
    latest: date | None = None
    date_format_message: str | None = None

    @property
    def label(self) -> str:
        return _label(self.name)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _date_format_message(what: str) -> str:
    return f"The {what} does not match the format YYYY-MM-DD."


_LAST_DATE = date(2038, 1, 1)

# In the order the TDB checks them, which is the order its errors come back in.
FIELDS: tuple[_Field, ...] = (
    _Field("decision_visibility", "choices", DECISION_VISIBILITIES, nullable=True),
    _Field("decision_visibility_other", "text", max_chars=500),
    _Field("decision_monetary", "choice", DECISION_MONETARIES, nullable=True),
    _Field("decision_monetary_other", "text", max_chars=500),
    _Field("decision_provision", "choice", DECISION_PROVISIONS, nullable=True),
    _Field("decision_account", "choice", DECISION_ACCOUNTS, nullable=True),
    _Field("account_type", "choice", ACCOUNT_TYPES, nullable=True),
    _Field("category_specification", "choices", KEYWORDS, nullable=True),
    _Field("category_specification_other", "text", max_chars=500),
    _Field("decision_ground", "choice", DECISION_GROUNDS, required=True),
    _Field("decision_ground_reference_url", "url", nullable=True, max_chars=500),
    _Field("illegal_content_legal_ground", "text", max_chars=500),
    _Field("illegal_content_explanation", "text", max_chars=2000),
    _Field("incompatible_content_ground", "text", max_chars=500),
    _Field("incompatible_content_explanation", "text", max_chars=2000),
    _Field("incompatible_content_illegal", "choice", YES_NO),
    _Field("content_type", "choices", CONTENT_TYPES, required=True),
    _Field("content_type_other", "text", max_chars=500),
    _Field("category", "choice", STATEMENT_CATEGORIES, required=True),
    _Field("category_addition", "choices", STATEMENT_CATEGORIES),
    _Field("territorial_scope", "choices", EEA_COUNTRIES, nullable=True),
    _Field("content_language", "choice", LANGUAGES, nullable=True),
    _Field(
        "content_date",
        "date",
        required=True,
        earliest=date(2000, 1, 1),
        latest=_LAST_DATE,
        date_format_message=_date_format_message("content date"),
    ),
    _Field(
        "application_date",
        "date",
        required=True,
        earliest=date(2020, 1, 1),
        latest=_LAST_DATE,
        date_format_message=_date_format_message("application date"),
    ),
    *(
        _Field(
            f"end_date_{what}_restriction",
            "date",
            nullable=True,
            latest=_LAST_DATE,
            date_format_message=_date_format_message(f"end date of {what} restriction"),
        )
        for what in ("account", "monetary", "service", "visibility")
    ),
    _Field("decision_facts", "text", required=True, max_chars=5000),
    _Field("source_type", "choice", SOURCE_TYPES, required=True),
    _Field("source_identity", "text", nullable=True, max_chars=500),
    _Field("automated_detection", "choice", YES_NO, required=True),
    _Field("automated_decision", "choice", AUTOMATED_DECISIONS, required=True),
    _Field("puid", "text", required=True, max_chars=500),
)
FIELD_NAMES = tuple(field.name for field in FIELDS)

RESTRICTIONS = (
    "decision_visibility",
    "decision_monetary",
    "decision_provision",
    "decision_account",
)
ARRAY_FIELDS = tuple(field.name for field in FIELDS if field.kind == "choices")

# Fields that belong to one decision ground: dropped for the other ground (not an error), and
# required, with the TDB's own wording, for theirs.
_GROUND_FIELDS: dict[str, tuple[str, str | None]] = {
    "illegal_content_legal_ground": (
        DECISION_GROUND_ILLEGAL,
        "The illegal content legal ground field is required when decision ground is "
        "illegal content.",
    ),
    "illegal_content_explanation": (
        DECISION_GROUND_ILLEGAL,
        "The illegal content explanation field is required when decision ground is "
        "illegal content.",
    ),
    "incompatible_content_ground": (
        DECISION_GROUND_INCOMPATIBLE,
        "The incompatible content ground field is required when decision ground is "
        "incompatible content.",
    ),
    "incompatible_content_explanation": (
        DECISION_GROUND_INCOMPATIBLE,
        "The incompatible content explanation field is required when decision ground is "
        "incompatible content.",
    ),
    "incompatible_content_illegal": (DECISION_GROUND_INCOMPATIBLE, None),
}


def _filled(value: Any) -> bool:
    """What the TDB counts as given for a required field."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() != ""
    if isinstance(value, list | dict):
        return len(value) > 0
    return True


def _blank_to_none(value: Any) -> Any:
    if value == "":
        return None
    if isinstance(value, list):
        return [_blank_to_none(item) for item in value]
    return value


def _parse_date(value: str) -> date | None:
    """A real calendar date written exactly YYYY-MM-DD, or None."""
    if not DATE_PATTERN.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _is_url(value: str) -> bool:
    if any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.hostname)


def _check(field: _Field, present: bool, value: Any, required_message: str | None) -> list[str]:
    label = field.label
    if required_message is not None and not _filled(value):
        return [required_message]
    if not present:
        return []
    if value is None:
        if field.nullable or field.kind == "text":
            return []
        # A non-nullable field given as null fails its type check, as it does at the TDB.
        if field.kind == "choices":
            return [f"The {label} field must be an array."]
        return [f"The selected {label} is invalid."]

    messages: list[str] = []
    if field.kind == "choice":
        if not isinstance(value, str) or value not in field.allowed:
            messages.append(f"The selected {label} is invalid.")
    elif field.kind == "choices":
        if not isinstance(value, list):
            messages.append(f"The {label} field must be an array.")
        elif any(not isinstance(item, str) or item not in field.allowed for item in value):
            messages.append(f"The selected {label} is invalid.")
    elif field.kind == "date":
        parsed = _parse_date(value) if isinstance(value, str) else None
        if parsed is None:
            messages.append(
                field.date_format_message or f"The {label} field must match the format Y-m-d."
            )
        else:
            if field.earliest is not None and parsed < field.earliest:
                messages.append(
                    f"The {label} field must be a date after or equal to {field.earliest}."
                )
            if field.latest is not None and parsed > field.latest:
                messages.append(
                    f"The {label} field must be a date before or equal to {field.latest}."
                )
    elif field.kind == "url":
        if not isinstance(value, str) or not _is_url(value):
            messages.append(f"The {label} field must be a valid URL.")
        elif field.max_chars is not None and len(value) > field.max_chars:
            messages.append(
                f"The {label} field must not be greater than {field.max_chars} characters."
            )
    else:  # text
        if not isinstance(value, str):
            return [f"The {label} field must be a string."]
        if field.max_chars is not None and len(value) > field.max_chars:
            messages.append(
                f"The {label} field must not be greater than {field.max_chars} characters."
            )
        if field.name == "puid" and not PUID_PATTERN.fullmatch(value):
            messages.append(f"The {label} field format is invalid.")
    return messages


def validate_statement(statement: Any) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Check one statement as the TDB does.

    Returns the errors (field -> messages, empty when the statement is valid) and the fields
    that are kept: known fields that were given, minus those excluded by the decision ground or
    by the absence of an "other" choice. Unknown fields are dropped.
    """
    if not isinstance(statement, dict):
        return {"statement": ["The statement must be an object."]}, {}
    data = {key: _blank_to_none(value) for key, value in statement.items()}

    required: dict[str, str] = {
        field.name: f"The {field.label} field is required." for field in FIELDS if field.required
    }
    excluded: set[str] = set()

    def other_text(field: str, chosen: bool, message: str) -> None:
        if chosen:
            required[field] = message
        else:
            excluded.add(field)

    visibility = data.get("decision_visibility")
    content_type = data.get("content_type")
    other_text(
        "decision_visibility_other",
        isinstance(visibility, list) and "DECISION_VISIBILITY_OTHER" in visibility,
        "The decision visibility other field is required.",
    )
    other_text(
        "decision_monetary_other",
        data.get("decision_monetary") == "DECISION_MONETARY_OTHER",
        "The decision monetary other field is required when decision monetary is other.",
    )
    other_text(
        "content_type_other",
        isinstance(content_type, list) and "CONTENT_TYPE_OTHER" in content_type,
        "The content type other field is required.",
    )
    ground = data.get("decision_ground")
    for name, (for_ground, message) in _GROUND_FIELDS.items():
        if ground != for_ground:
            excluded.add(name)
        elif message is not None:
            required[name] = message

    # At least one kind of restriction: each of the four is required when the others are not.
    if not any(_filled(data.get(name)) for name in RESTRICTIONS):
        for name in RESTRICTIONS:
            others = " / ".join(_label(other) for other in RESTRICTIONS if other != name)
            required[name] = (
                f"The {_label(name)} field is required when none of {others} are present."
            )

    errors: dict[str, list[str]] = {}
    kept: dict[str, Any] = {}
    for field in FIELDS:
        if field.name in excluded:
            continue
        present = field.name in data
        messages = _check(field, present, data.get(field.name), required.get(field.name))
        if messages:
            errors[field.name] = messages
        if present:
            kept[field.name] = data[field.name]
    return errors, kept


def summarize(errors: dict[str, list[str]]) -> str:
    """The top-level message of a validation failure: the first message and how many more."""
    messages = [message for field_messages in errors.values() for message in field_messages]
    if not messages:
        return ""
    more = len(messages) - 1
    if more == 0:
        return messages[0]
    return f"{messages[0]} (and {more} more {'error' if more == 1 else 'errors'})"


# --- Test data -------------------------------------------------------------------------------

OMIT = object()
"""An override for ``valid_statement`` that leaves the field out."""


def valid_statement(**overrides: Any) -> dict[str, Any]:
    """A statement the TDB accepts (illegal content, removed), with a fresh ``puid``.

    Keyword arguments replace fields; ``OMIT`` removes one.
    """
    statement: dict[str, Any] = {
        "decision_visibility": ["DECISION_VISIBILITY_CONTENT_REMOVED"],
        "decision_ground": DECISION_GROUND_ILLEGAL,
        "decision_ground_reference_url": "https://marketplace.example/policies/weapons",
        "illegal_content_legal_ground": "Waffengesetz (WaffG) § 34",
        "illegal_content_explanation": (
            "The listing offers a handgun to anyone, without the licence German law requires."
        ),
        "content_type": ["CONTENT_TYPE_PRODUCT", "CONTENT_TYPE_IMAGE"],
        "category": "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS",
        "category_specification": ["KEYWORD_REGULATED_GOODS_SERVICES"],
        "territorial_scope": ["AT", "DE"],
        "content_language": "DE",
        "content_date": "2025-11-03",
        "application_date": "2025-11-04",
        "decision_facts": (
            "The listing's title, description and first image show a pistol offered for sale "
            "with ammunition; a moderator confirmed it."
        ),
        "source_type": "SOURCE_VOLUNTARY",
        "automated_detection": "Yes",
        "automated_decision": "AUTOMATED_DECISION_PARTIALLY",
        "account_type": "ACCOUNT_TYPE_PRIVATE",
        "puid": f"listing-{uuid.uuid4().hex}",
    }
    for key, value in overrides.items():
        if value is OMIT:
            statement.pop(key, None)
        else:
            statement[key] = value
    return statement


# --- The server ------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Request headers; names are matched without regard to case."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass
class RecordedRequest:
    """One request as it arrived, and the status it was answered with."""

    method: str
    path: str
    headers: Headers
    body: Any  # the parsed JSON body; None when there was none or it was not JSON
    raw_body: bytes
    status: int


@dataclass
class _Reply:
    status: int
    payload: Any = None
    location: str | None = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    tdb: TdbServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection cut by stop() or dropped by a client that gave up is expected here.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients' connection pools expect
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.tdb._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.tdb._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        raw = self._read_body()
        reply_bytes, content_type, reply = self.server.tdb._respond(self, raw)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(reply_bytes)))
            if reply.location is not None:
                self.send_header("Location", reply.location)
            self.end_headers()
            self.wfile.write(reply_bytes)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (read timeout) or the server is stopping

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class TdbServer:
    """A local stand-in for the Transparency Database's statement API, on 127.0.0.1.

    ``TdbServer(token=...)`` builds it; ``start()`` binds a free port (or, after ``stop()``, the
    same one again) and serves in a background thread. Use it as a context manager to start and
    stop it around a block.
    """

    def __init__(
        self,
        token: str = "tdb-test-token",
        *,
        platform_name: str = "Test marketplace",
        existing_puid_status: int = 302,
    ) -> None:
        self.token = token
        self.platform_name = platform_name
        self.existing_puid_status = existing_puid_status
        self.fail_next: list[int] = []
        self.hang_seconds: float = 0.0
        self.requests: list[RecordedRequest] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._port: int | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # Lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> TdbServer:
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        httpd = _HTTPServer(("127.0.0.1", self._port or 0), _Handler)
        httpd.tdb = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name=f"tdb-server-{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections, so the server is gone, not just quiet."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may have closed it already
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TdbServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    # Requests

    def _respond(self, handler: _Handler, raw: bytes) -> tuple[bytes, str, _Reply]:
        headers = Headers(handler.headers.items())
        path = urlsplit(handler.path).path
        body = _parse_json(raw, headers)
        # A late answer still does the work, as a slow server would: a client that timed out
        # and retries meets its own statements as duplicates.
        hang = self.hang_seconds
        if hang > 0:
            time.sleep(hang)
        with self._lock:
            if self.fail_next:
                reply = _Reply(self.fail_next.pop(0), {"message": MESSAGE_SERVER_ERROR})
            else:
                reply = self._route(handler.command, path, headers, body)
            self.requests.append(
                RecordedRequest(handler.command, path, headers, body, raw, reply.status)
            )
        if reply.status in (301, 302, 303, 307, 308) and reply.payload is None:
            text = f"Redirecting to {reply.location}"
            return text.encode(), "text/html; charset=UTF-8", reply
        return json.dumps(reply.payload).encode(), "application/json", reply

    def _route(self, method: str, path: str, headers: Headers, body: Any) -> _Reply:
        routes = {
            "/api/v1/statements": ("POST", self._store_many),
            "/api/v1/statement": ("POST", self._store_one),
        }
        prefix = "/api/v1/statement/existing-puid/"
        if path in routes:
            allowed, action = routes[path]
        elif path.startswith(prefix) and len(path) > len(prefix):
            allowed, action = "GET", self._existing_puid
        else:
            return self._framework_error(
                headers, 404, {"message": f"The route {path.lstrip('/')} could not be found."}
            )
        if method != allowed:
            message = (
                f"The {method} method is not supported for route {path.lstrip('/')}. "
                f"Supported methods: {allowed}."
            )
            return self._framework_error(headers, 405, {"message": message})
        if not self._authenticated(headers):
            return self._framework_error(
                headers, 401, {"message": MESSAGE_UNAUTHENTICATED}, redirect=f"{self.url}/login"
            )
        return action(path, headers, body)

    def _authenticated(self, headers: Headers) -> bool:
        authorization = headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.token

    def _framework_error(
        self, headers: Headers, status: int, payload: dict[str, Any], redirect: str | None = None
    ) -> _Reply:
        """An error the TDB's framework renders: JSON only for a client that asks for JSON."""
        if redirect is None or _expects_json(headers):
            return _Reply(status, payload)
        return _Reply(302, None, redirect)

    def _validation_failure(self, headers: Headers, errors: dict[str, list[str]]) -> _Reply:
        back = headers.get("Referer") or f"{self.url}/"
        payload = {"message": summarize(errors), "errors": errors}
        return self._framework_error(headers, 422, payload, redirect=back)

    def _store_many(self, path: str, headers: Headers, body: Any) -> _Reply:
        statements = body.get("statements") if isinstance(body, dict) else None
        problem = None
        if not _filled(statements):
            problem = "The statements field is required."
        elif not isinstance(statements, list):
            problem = "The statements field must be an array."
        elif len(statements) > MAX_STATEMENTS_PER_CALL:
            problem = (
                f"The statements field must have between 1 and {MAX_STATEMENTS_PER_CALL} items."
            )
        if problem is not None:
            return self._validation_failure(headers, {"statements": [problem]})
        assert isinstance(statements, list)

        errors: dict[str, Any] = {}
        kept: list[dict[str, Any]] = []
        for index, statement in enumerate(statements):
            statement_errors, fields = validate_statement(statement)
            if statement_errors:
                errors[f"statement_{index}"] = statement_errors
            kept.append(fields)
        if errors:
            return _Reply(422, {"errors": errors})

        # Repeats within the call are reported first; only then those stored before.
        puids = [fields["puid"] for fields in kept]
        counts = Counter(puids)
        duplicates = [puid for puid, count in counts.items() if count > 1]
        if not duplicates:
            duplicates = [puid for puid in puids if puid in self.stored]
        if duplicates:
            payload = {
                "message": MESSAGE_PUIDS_NOT_UNIQUE,
                "errors": {"puid": [MESSAGE_PUIDS_NOT_UNIQUE], "existing_puids": duplicates},
            }
            return _Reply(422, payload)

        created_at = _now()
        out = [self._store(fields, created_at) for fields in kept]
        return _Reply(201, {"statements": out})

    def _store_one(self, path: str, headers: Headers, body: Any) -> _Reply:
        errors, fields = validate_statement(body if isinstance(body, dict) else {})
        if errors:
            return self._validation_failure(headers, errors)
        existing = self.stored.get(fields["puid"])
        if existing is not None:
            payload = {
                "message": MESSAGE_PUID_NOT_UNIQUE,
                "errors": {"puid": [MESSAGE_PUID_NOT_UNIQUE]},
                "existing": {"uuid": existing["uuid"], "puid": existing["puid"]},
            }
            return _Reply(422, payload)
        return _Reply(201, self._store(fields, _now()))

    def _existing_puid(self, path: str, headers: Headers, body: Any) -> _Reply:
        puid = unquote(path.rsplit("/", 1)[1])
        statement = self.stored.get(puid)
        if statement is None:
            return _Reply(404, {"message": MESSAGE_NOT_FOUND})
        return _Reply(self.existing_puid_status, statement)

    def _store(self, fields: dict[str, Any], created_at: str) -> dict[str, Any]:
        """Keep a valid statement with every known field: null when not given, [] for arrays."""
        statement: dict[str, Any] = {name: fields.get(name) for name in FIELD_NAMES}
        for name in ARRAY_FIELDS:
            if statement[name] is None:
                statement[name] = []
        statement.update(
            uuid=str(uuid.uuid4()), platform_name=self.platform_name, created_at=created_at
        )
        self.stored[statement["puid"]] = statement
        return statement


def _parse_json(raw: bytes, headers: Headers) -> Any:
    """The JSON body; a body not declared as JSON is not read as JSON, as at the TDB."""
    content_type = (headers.get("Content-Type") or "").lower()
    if not raw or ("/json" not in content_type and "+json" not in content_type):
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


def _expects_json(headers: Headers) -> bool:
    """Whether the framework would answer an error with JSON rather than a redirect."""
    accept = (headers.get("Accept") or "").split(",")[0].split(";")[0].strip().lower()
    if "/json" in accept or "+json" in accept:
        return True
    ajax = (headers.get("X-Requested-With") or "") == "XMLHttpRequest"
    return ajax and accept in ("", "*/*", "*")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
