"""The local stand-in for the Transparency Database's statement API, tested over its socket.

The portal's own submission tests trust this server to refuse what the TDB refuses and to accept
what it accepts; these tests hold it to that, one rule family at a time.
"""

from __future__ import annotations

import json
import re
import threading
import uuid

import httpx2
import pytest

from tests.reviews.tdb_server import OMIT, valid_statement

TOKEN = "tdb-test-token"
JSON_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}


@pytest.fixture
def client(tdb_server):
    with httpx2.Client(base_url=tdb_server.url, headers=JSON_HEADERS, timeout=5) as http:
        yield http


def submit(client: httpx2.Client, *statements: dict) -> httpx2.Response:
    return client.post("/api/v1/statements", json={"statements": list(statements)})


def test_valid_illegal_content_statement_is_stored(tdb_server, client):
    statement = valid_statement(unknown_field="dropped", platform_id=7)

    response = submit(client, statement)

    assert response.status_code == 201
    [out] = response.json()["statements"]
    assert uuid.UUID(out["uuid"]).version == 4
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", out["created_at"])
    assert out["puid"] == statement["puid"]
    assert out["decision_ground"] == "DECISION_GROUND_ILLEGAL_CONTENT"
    assert out["illegal_content_legal_ground"] == statement["illegal_content_legal_ground"]
    assert out["content_type"] == ["CONTENT_TYPE_PRODUCT", "CONTENT_TYPE_IMAGE"]
    assert out["territorial_scope"] == ["AT", "DE"]
    # Fields not given come back empty; unknown ones are not kept.
    assert out["decision_monetary"] is None
    assert out["category_addition"] == []
    assert out["incompatible_content_ground"] is None
    assert "unknown_field" not in out
    assert "platform_id" not in out
    assert tdb_server.stored == {statement["puid"]: out}


def test_valid_incompatible_content_statement_drops_the_illegal_content_fields(tdb_server, client):
    statement = valid_statement(
        decision_ground="DECISION_GROUND_INCOMPATIBLE_CONTENT",
        incompatible_content_ground="Terms of sale, section 4.2 (weapons)",
        incompatible_content_explanation="Weapons may not be listed on the marketplace.",
        incompatible_content_illegal="No",
        # Left over from the other ground: dropped, not checked (too long on purpose).
        illegal_content_explanation="x" * 3000,
    )

    response = submit(client, statement)

    assert response.status_code == 201
    [out] = response.json()["statements"]
    assert out["incompatible_content_ground"] == "Terms of sale, section 4.2 (weapons)"
    assert out["incompatible_content_illegal"] == "No"
    assert out["illegal_content_legal_ground"] is None
    assert out["illegal_content_explanation"] is None
    assert list(tdb_server.stored) == [statement["puid"]]


def test_boundaries_and_optional_fields_are_accepted(client):
    statement = valid_statement(
        content_date="2000-01-01",
        application_date="2038-01-01",
        end_date_visibility_restriction="2038-01-01",
        end_date_account_restriction=None,
        decision_facts="f" * 5000,
        puid="A-z_0" + "9" * 495,
        decision_visibility=["DECISION_VISIBILITY_OTHER", "DECISION_VISIBILITY_CONTENT_LABELLED"],
        decision_visibility_other="Shown only after a warning",
        decision_monetary="DECISION_MONETARY_OTHER",
        decision_monetary_other="Payouts held for review",
        decision_account="DECISION_ACCOUNT_SUSPENDED",
        content_type=["CONTENT_TYPE_OTHER"],
        content_type_other="Seller storefront",
        category_addition=["STATEMENT_CATEGORY_SCAMS_AND_FRAUD"],
        category_specification=["KEYWORD_OTHER"],
        category_specification_other="Replica firearms",
        territorial_scope=None,
        content_language="UK",
        account_type=None,
        source_type="SOURCE_TRUSTED_FLAGGER",
        source_identity="Trusted flagger e.V.",
        decision_ground_reference_url=None,
        automated_detection="No",
        automated_decision="AUTOMATED_DECISION_NOT_AUTOMATED",
    )

    response = submit(client, statement)

    assert response.status_code == 201, response.json()
    [out] = response.json()["statements"]
    assert out["decision_visibility_other"] == "Shown only after a warning"
    assert out["content_type_other"] == "Seller storefront"
    assert out["territorial_scope"] == []


def test_a_restriction_of_another_kind_is_enough(client):
    response = submit(
        client,
        valid_statement(
            decision_visibility=[], decision_provision="DECISION_PROVISION_TOTAL_SUSPENSION"
        ),
    )

    assert response.status_code == 201, response.json()


def _required(field: str) -> str:
    return f"The {field.replace('_', ' ')} field is required."


def _invalid(field: str) -> str:
    return f"The selected {field.replace('_', ' ')} is invalid."


NO_RESTRICTION = {
    "decision_visibility": [
        "The decision visibility field is required when none of decision monetary / "
        "decision provision / decision account are present."
    ],
    "decision_monetary": [
        "The decision monetary field is required when none of decision visibility / "
        "decision provision / decision account are present."
    ],
    "decision_provision": [
        "The decision provision field is required when none of decision visibility / "
        "decision monetary / decision account are present."
    ],
    "decision_account": [
        "The decision account field is required when none of decision visibility / "
        "decision monetary / decision provision are present."
    ],
}

REJECTED = [
    # Required fields missing, null or empty.
    *(
        pytest.param({field: OMIT}, {field: [_required(field)]}, id=f"missing-{field}")
        for field in (
            "decision_ground",
            "content_type",
            "category",
            "content_date",
            "application_date",
            "decision_facts",
            "source_type",
            "automated_detection",
            "automated_decision",
            "puid",
        )
    ),
    pytest.param({"category": None}, {"category": [_required("category")]}, id="null-category"),
    pytest.param(
        {"decision_facts": ""}, {"decision_facts": [_required("decision_facts")]}, id="empty-facts"
    ),
    pytest.param(
        {"decision_facts": "   "},
        {"decision_facts": [_required("decision_facts")]},
        id="blank-facts",
    ),
    pytest.param(
        {"content_type": []}, {"content_type": [_required("content_type")]}, id="no-types"
    ),
    pytest.param(
        {"illegal_content_explanation": OMIT},
        {
            "illegal_content_explanation": [
                "The illegal content explanation field is required when decision ground is "
                "illegal content."
            ]
        },
        id="illegal-without-explanation",
    ),
    pytest.param(
        {"illegal_content_legal_ground": None},
        {
            "illegal_content_legal_ground": [
                "The illegal content legal ground field is required when decision ground is "
                "illegal content."
            ]
        },
        id="illegal-without-legal-ground",
    ),
    pytest.param(
        {
            "decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT",
            "incompatible_content_explanation": "Not allowed by the terms.",
        },
        {
            "incompatible_content_ground": [
                "The incompatible content ground field is required when decision ground is "
                "incompatible content."
            ]
        },
        id="incompatible-without-ground",
    ),
    # Values outside the TDB's vocabularies.
    pytest.param(
        {"category": "STATEMENT_CATEGORY_WEAPONS"},
        {"category": [_invalid("category")]},
        id="category",
    ),
    pytest.param(
        {"decision_ground": "ILLEGAL_CONTENT"},
        {"decision_ground": [_invalid("decision_ground")]},
        id="ground",
    ),
    pytest.param(
        {"decision_visibility": ["DECISION_VISIBILITY_CONTENT_HIDDEN"]},
        {"decision_visibility": [_invalid("decision_visibility")]},
        id="visibility-item",
    ),
    pytest.param(
        {"decision_visibility": "DECISION_VISIBILITY_CONTENT_REMOVED"},
        {"decision_visibility": ["The decision visibility field must be an array."]},
        id="visibility-not-array",
    ),
    pytest.param(
        {"decision_monetary": "DECISION_MONETARY_FINE"},
        {"decision_monetary": [_invalid("decision_monetary")]},
        id="monetary",
    ),
    pytest.param(
        {"decision_provision": "DECISION_PROVISION_SUSPENDED"},
        {"decision_provision": [_invalid("decision_provision")]},
        id="provision",
    ),
    pytest.param(
        {"decision_account": "DECISION_ACCOUNT_BANNED"},
        {"decision_account": [_invalid("decision_account")]},
        id="account",
    ),
    pytest.param(
        {"account_type": "ACCOUNT_TYPE_ROBOT"},
        {"account_type": [_invalid("account_type")]},
        id="acct",
    ),
    pytest.param(
        {"content_type": ["CONTENT_TYPE_LISTING"]},
        {"content_type": [_invalid("content_type")]},
        id="content-type",
    ),
    pytest.param(
        {"category_addition": ["STATEMENT_CATEGORY_WEAPONS"]},
        {"category_addition": [_invalid("category_addition")]},
        id="category-addition",
    ),
    pytest.param(
        {"category_addition": None},
        {"category_addition": ["The category addition field must be an array."]},
        id="category-addition-null",
    ),
    pytest.param(
        {"category_specification": ["KEYWORD_WEAPONS"]},
        {"category_specification": [_invalid("category_specification")]},
        id="keyword",
    ),
    pytest.param(
        {"source_type": "SOURCE_OTHER"}, {"source_type": [_invalid("source_type")]}, id="source"
    ),
    pytest.param(
        {"automated_detection": True},
        {"automated_detection": [_invalid("automated_detection")]},
        id="detection-bool",
    ),
    pytest.param(
        {"automated_detection": "yes"},
        {"automated_detection": [_invalid("automated_detection")]},
        id="detection-case",
    ),
    pytest.param(
        {"automated_decision": "Yes"},
        {"automated_decision": [_invalid("automated_decision")]},
        id="decision",
    ),
    pytest.param(
        {
            "decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT",
            "incompatible_content_ground": "Terms 4.2",
            "incompatible_content_explanation": "Not allowed.",
            "incompatible_content_illegal": "Maybe",
        },
        {"incompatible_content_illegal": [_invalid("incompatible_content_illegal")]},
        id="incompatible-illegal",
    ),
    pytest.param(
        {"territorial_scope": ["DE", "US"]},
        {"territorial_scope": [_invalid("territorial_scope")]},
        id="scope-US",
    ),
    pytest.param(
        {"territorial_scope": ["de"]},
        {"territorial_scope": [_invalid("territorial_scope")]},
        id="scope-lower",
    ),
    pytest.param(
        {"territorial_scope": ["EL"]},
        {"territorial_scope": [_invalid("territorial_scope")]},
        id="scope-EL-is-GR",
    ),
    pytest.param(
        {"content_language": "de"},
        {"content_language": [_invalid("content_language")]},
        id="language-lower",
    ),
    pytest.param(
        {"content_language": "XX"},
        {"content_language": [_invalid("content_language")]},
        id="language-unknown",
    ),
    # Dates: format, real calendar days, ranges.
    pytest.param(
        {"content_date": "2024-1-5"},
        {"content_date": ["The content date does not match the format YYYY-MM-DD."]},
        id="date-unpadded",
    ),
    pytest.param(
        {"content_date": "2024-02-30"},
        {"content_date": ["The content date does not match the format YYYY-MM-DD."]},
        id="date-not-a-day",
    ),
    pytest.param(
        {"application_date": "2024-11-04T10:00:00"},
        {"application_date": ["The application date does not match the format YYYY-MM-DD."]},
        id="date-with-time",
    ),
    pytest.param(
        {"end_date_visibility_restriction": "04/11/2025"},
        {
            "end_date_visibility_restriction": [
                "The end date of visibility restriction does not match the format YYYY-MM-DD."
            ]
        },
        id="end-date-format",
    ),
    pytest.param(
        {"content_date": "1999-12-31"},
        {"content_date": ["The content date field must be a date after or equal to 2000-01-01."]},
        id="content-date-early",
    ),
    pytest.param(
        {"application_date": "2019-12-31"},
        {
            "application_date": [
                "The application date field must be a date after or equal to 2020-01-01."
            ]
        },
        id="application-date-early",
    ),
    pytest.param(
        {"application_date": "2038-01-02"},
        {
            "application_date": [
                "The application date field must be a date before or equal to 2038-01-01."
            ]
        },
        id="application-date-late",
    ),
    pytest.param(
        {"end_date_account_restriction": "2040-01-01"},
        {
            "end_date_account_restriction": [
                "The end date account restriction field must be a date before or equal to "
                "2038-01-01."
            ]
        },
        id="end-date-late",
    ),
    # Lengths and types.
    pytest.param(
        {"decision_facts": "f" * 5001},
        {"decision_facts": ["The decision facts field must not be greater than 5000 characters."]},
        id="facts-5001",
    ),
    pytest.param(
        {"decision_facts": 42},
        {"decision_facts": ["The decision facts field must be a string."]},
        id="facts-number",
    ),
    pytest.param(
        {"illegal_content_legal_ground": "g" * 501},
        {
            "illegal_content_legal_ground": [
                "The illegal content legal ground field must not be greater than 500 characters."
            ]
        },
        id="legal-ground-501",
    ),
    pytest.param(
        {"illegal_content_explanation": "e" * 2001},
        {
            "illegal_content_explanation": [
                "The illegal content explanation field must not be greater than 2000 characters."
            ]
        },
        id="explanation-2001",
    ),
    pytest.param(
        {"source_identity": "s" * 501},
        {"source_identity": ["The source identity field must not be greater than 500 characters."]},
        id="source-identity-501",
    ),
    pytest.param(
        {"decision_ground_reference_url": "not a url"},
        {
            "decision_ground_reference_url": [
                "The decision ground reference url field must be a valid URL."
            ]
        },
        id="url",
    ),
    # The platform's identifier.
    pytest.param(
        {"puid": "listing 5531"}, {"puid": ["The puid field format is invalid."]}, id="puid-space"
    ),
    pytest.param(
        {"puid": "listing-5531\n"},
        {"puid": ["The puid field format is invalid."]},
        id="puid-newline",
    ),
    pytest.param(
        {"puid": "listing/5531"}, {"puid": ["The puid field format is invalid."]}, id="puid-slash"
    ),
    pytest.param(
        {"puid": "p" * 501},
        {"puid": ["The puid field must not be greater than 500 characters."]},
        id="puid-501",
    ),
    pytest.param({"puid": 5531}, {"puid": ["The puid field must be a string."]}, id="puid-number"),
    # "Other" choices need their text.
    pytest.param(
        {"decision_visibility": ["DECISION_VISIBILITY_OTHER"]},
        {"decision_visibility_other": ["The decision visibility other field is required."]},
        id="visibility-other-without-text",
    ),
    pytest.param(
        {"decision_monetary": "DECISION_MONETARY_OTHER"},
        {
            "decision_monetary_other": [
                "The decision monetary other field is required when decision monetary is other."
            ]
        },
        id="monetary-other-without-text",
    ),
    pytest.param(
        {"content_type": ["CONTENT_TYPE_TEXT", "CONTENT_TYPE_OTHER"], "content_type_other": ""},
        {"content_type_other": ["The content type other field is required."]},
        id="content-type-other-without-text",
    ),
    pytest.param(
        {
            "decision_visibility": ["DECISION_VISIBILITY_OTHER"],
            "decision_visibility_other": "o" * 501,
        },
        {
            "decision_visibility_other": [
                "The decision visibility other field must not be greater than 500 characters."
            ]
        },
        id="visibility-other-501",
    ),
    # No restriction of any kind.
    pytest.param({"decision_visibility": OMIT}, NO_RESTRICTION, id="no-restriction"),
    pytest.param({"decision_visibility": []}, NO_RESTRICTION, id="empty-visibility"),
    pytest.param(
        {"decision_visibility": None, "decision_monetary": "", "decision_account": None},
        NO_RESTRICTION,
        id="all-restrictions-null",
    ),
]


@pytest.mark.parametrize(("overrides", "errors"), REJECTED)
def test_each_rule_rejects_with_the_field_named(tdb_server, client, overrides, errors):
    response = submit(client, valid_statement(**overrides))

    assert response.status_code == 422
    assert response.json() == {"errors": {"statement_0": errors}}
    assert tdb_server.stored == {}


def test_several_errors_in_one_statement_come_back_together(client):
    statement = valid_statement(category=OMIT, puid="bad puid", content_date="2024-02-30")

    response = submit(client, statement)

    assert response.status_code == 422
    assert response.json() == {
        "errors": {
            "statement_0": {
                "category": ["The category field is required."],
                "content_date": ["The content date does not match the format YYYY-MM-DD."],
                "puid": ["The puid field format is invalid."],
            }
        }
    }


def test_one_bad_statement_rejects_the_whole_batch(tdb_server, client):
    good, bad, also_good = valid_statement(), valid_statement(category=OMIT), valid_statement()

    response = submit(client, good, bad, also_good)

    assert response.status_code == 422
    assert response.json() == {
        "errors": {"statement_1": {"category": ["The category field is required."]}}
    }
    assert tdb_server.stored == {}


def test_every_bad_statement_in_a_batch_is_listed(tdb_server, client):
    response = submit(
        client,
        valid_statement(automated_detection=OMIT),
        valid_statement(),
        valid_statement(territorial_scope=["US"]),
        "not a statement",
    )

    assert response.status_code == 422
    assert response.json() == {
        "errors": {
            "statement_0": {"automated_detection": ["The automated detection field is required."]},
            "statement_2": {"territorial_scope": ["The selected territorial scope is invalid."]},
            "statement_3": {"statement": ["The statement must be an object."]},
        }
    }
    assert tdb_server.stored == {}


def test_a_hundred_statements_are_accepted_in_one_call(tdb_server, client):
    statements = [valid_statement() for _ in range(100)]

    response = submit(client, *statements)

    assert response.status_code == 201
    assert [s["puid"] for s in response.json()["statements"]] == [s["puid"] for s in statements]
    assert len(tdb_server.stored) == 100


def test_a_hundred_and_one_statements_are_refused(tdb_server, client):
    response = submit(client, *(valid_statement() for _ in range(101)))

    message = "The statements field must have between 1 and 100 items."
    assert response.status_code == 422
    assert response.json() == {"message": message, "errors": {"statements": [message]}}
    assert tdb_server.stored == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"statements": []}, "The statements field is required.", id="empty"),
        pytest.param({}, "The statements field is required.", id="missing"),
        pytest.param(valid_statement(), "The statements field is required.", id="bare-statement"),
        pytest.param({"statements": "all"}, "The statements field must be an array.", id="string"),
    ],
)
def test_the_batch_itself_is_checked(client, body, message):
    response = client.post("/api/v1/statements", json=body)

    assert response.status_code == 422
    assert response.json() == {"message": message, "errors": {"statements": [message]}}


def test_a_body_not_declared_as_json_is_not_read(client):
    body = json.dumps({"statements": [valid_statement()]})

    response = client.post(
        "/api/v1/statements", content=body, headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 422
    assert response.json()["errors"] == {"statements": ["The statements field is required."]}


def test_a_puid_stored_before_rejects_a_later_batch(tdb_server, client):
    first = valid_statement()
    assert submit(client, first).status_code == 201
    fresh = valid_statement()

    response = submit(client, fresh, valid_statement(puid=first["puid"]))

    message = "The platform identifier(s) are not all unique within this call."
    assert response.status_code == 422
    assert response.json() == {
        "message": message,
        "errors": {"puid": [message], "existing_puids": [first["puid"]]},
    }
    assert list(tdb_server.stored) == [first["puid"]]


def test_a_puid_twice_in_one_call_is_refused(tdb_server, client):
    twice = valid_statement()

    response = submit(client, twice, valid_statement(), valid_statement(puid=twice["puid"]))

    assert response.status_code == 422
    assert response.json()["errors"]["existing_puids"] == [twice["puid"]]
    assert tdb_server.stored == {}


def test_concurrent_calls_with_one_puid_store_it_once(tdb_server):
    statement = valid_statement()
    statuses: list[int] = []

    def send() -> None:
        with httpx2.Client(base_url=tdb_server.url, headers=JSON_HEADERS, timeout=5) as http:
            statuses.append(submit(http, statement).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] + [422] * 7
    assert list(tdb_server.stored) == [statement["puid"]]


def test_single_statement_endpoint_stores_and_refuses_a_repeat(tdb_server, client):
    statement = valid_statement()

    created = client.post("/api/v1/statement", json=statement)
    again = client.post("/api/v1/statement", json=statement)

    assert created.status_code == 201
    stored = created.json()
    assert stored["puid"] == statement["puid"]
    assert uuid.UUID(stored["uuid"]).version == 4
    assert tdb_server.stored == {statement["puid"]: stored}
    message = "The identifier given is not unique within this platform."
    assert again.status_code == 422
    assert again.json() == {
        "message": message,
        "errors": {"puid": [message]},
        "existing": {"uuid": stored["uuid"], "puid": statement["puid"]},
    }


def test_single_statement_validation_errors_carry_a_summary(tdb_server, client):
    one = client.post("/api/v1/statement", json=valid_statement(category="NOPE"))
    three = client.post(
        "/api/v1/statement",
        json=valid_statement(category=OMIT, puid="a b", decision_facts="f" * 5001),
    )

    assert one.status_code == 422
    assert one.json() == {
        "message": "The selected category is invalid.",
        "errors": {"category": ["The selected category is invalid."]},
    }
    assert three.status_code == 422
    assert three.json() == {
        "message": "The category field is required. (and 2 more errors)",
        "errors": {
            "category": ["The category field is required."],
            "decision_facts": [
                "The decision facts field must not be greater than 5000 characters."
            ],
            "puid": ["The puid field format is invalid."],
        },
    }
    assert tdb_server.stored == {}


def test_existing_puid_lookup(tdb_server, client):
    statement = valid_statement()
    [stored] = submit(client, statement).json()["statements"]

    found = client.get(f"/api/v1/statement/existing-puid/{statement['puid']}")
    missing = client.get("/api/v1/statement/existing-puid/never-sent")

    # The TDB answers a hit with 302 Found, a JSON body and no Location header.
    assert found.status_code == 302
    assert "location" not in found.headers
    assert found.json() == stored
    assert missing.status_code == 404
    assert missing.json() == {"message": "statement of reason not found"}


def test_a_wrong_or_missing_token_is_refused(tdb_server, client):
    wrong = client.post(
        "/api/v1/statements",
        json={"statements": [valid_statement()]},
        headers={"Authorization": "Bearer not-the-token"},
    )
    with httpx2.Client(base_url=tdb_server.url, headers={"Accept": "application/json"}) as anon:
        missing = submit(anon, valid_statement())
        lookup = anon.get("/api/v1/statement/existing-puid/anything")

    for response in (wrong, missing, lookup):
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthenticated."}
    assert tdb_server.stored == {}
    assert [r.status for r in tdb_server.requests] == [401, 401, 401]


def test_framework_errors_redirect_a_client_that_does_not_ask_for_json(tdb_server):
    # The TDB's documentation requires "Accept: application/json"; without it, errors the
    # framework renders become redirects, while the API's own answers stay JSON.
    with httpx2.Client(
        base_url=tdb_server.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as http:
        unauthenticated = http.post(
            "/api/v1/statements",
            json={"statements": [valid_statement()]},
            headers={"Authorization": "Bearer wrong"},
        )
        invalid_single = http.post("/api/v1/statement", json=valid_statement(category=OMIT))
        invalid_in_batch = submit(http, valid_statement(category=OMIT))
        accepted = submit(http, valid_statement())

    assert unauthenticated.status_code == 302
    assert unauthenticated.headers["location"] == f"{tdb_server.url}/login"
    assert invalid_single.status_code == 302
    assert invalid_single.headers["location"] == f"{tdb_server.url}/"
    assert invalid_in_batch.status_code == 422
    assert accepted.status_code == 201


def test_requests_are_recorded(tdb_server, client):
    statement = valid_statement()

    submit(client, statement)

    [request] = tdb_server.requests
    assert request.method == "POST"
    assert request.path == "/api/v1/statements"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"statements": [statement]}
    assert request.status == 201


def test_fail_next_answers_errors_before_anything_else(tdb_server, client):
    tdb_server.fail_next = [503, 500]
    statement = valid_statement()

    first = submit(client, statement)
    second = client.post(
        "/api/v1/statements",
        json={"statements": [statement]},
        headers={"Authorization": "Bearer wrong"},
    )
    third = submit(client, statement)

    assert (first.status_code, first.json()) == (503, {"message": "Server Error"})
    assert (second.status_code, second.json()) == (500, {"message": "Server Error"})
    assert third.status_code == 201
    assert list(tdb_server.stored) == [statement["puid"]]
    assert tdb_server.fail_next == []
    assert [r.status for r in tdb_server.requests] == [503, 500, 201]


def test_a_hanging_server_times_the_client_out_but_still_stores(tdb_server, client):
    tdb_server.hang_seconds = 0.5
    statement = valid_statement()

    with pytest.raises(httpx2.ReadTimeout):
        client.post(
            "/api/v1/statements",
            json={"statements": [statement]},
            timeout=httpx2.Timeout(5, read=0.1),
        )
    assert tdb_server.stored == {}
    tdb_server.hang_seconds = 0
    threading.Event().wait(0.6)  # the late answer lands

    assert list(tdb_server.stored) == [statement["puid"]]
    assert submit(client, statement).json()["errors"]["existing_puids"] == [statement["puid"]]


def test_stop_and_start_again_on_the_same_port(tdb_server, client):
    before = valid_statement()
    assert submit(client, before).status_code == 201
    url = tdb_server.url

    tdb_server.stop()
    # The pooled keep-alive connection is cut too: the server is gone, not just quiet.
    with pytest.raises(httpx2.TransportError):
        submit(client, valid_statement())
    with pytest.raises(httpx2.ConnectError):
        httpx2.post(f"{url}/api/v1/statements", json={}, headers=JSON_HEADERS, timeout=2)

    tdb_server.start()
    after = valid_statement()

    assert tdb_server.url == url
    assert submit(client, after).status_code == 201
    assert list(tdb_server.stored) == [before["puid"], after["puid"]]


def test_unknown_routes_and_methods(client):
    unknown = client.post("/api/v1/statementz", json={})
    wrong_method = client.get("/api/v1/statements")

    assert unknown.status_code == 404
    assert unknown.json() == {"message": "The route api/v1/statementz could not be found."}
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "message": "The GET method is not supported for route api/v1/statements. "
        "Supported methods: POST."
    }
