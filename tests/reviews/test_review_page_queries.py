import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.fixtures_evidence import evidence_fill
from tests.reviews.helpers import open_cases


def page_queries(client, case_id) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"/cases/{case_id}/")
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.django_db
def test_the_review_page_query_count_does_not_grow_with_evidence(moderator):
    small, large = open_cases(0.6, 0.6)
    evidence_fill(small, images=1, neighbours=2)
    evidence_fill(large, images=6, neighbours=8)
    client = Client()
    client.force_login(moderator)
    client.get(f"/cases/{small.id}/")  # warm caches (session, user, roles)
    few, many = page_queries(client, small.id), page_queries(client, large.id)
    assert few == many, f"{few} queries with 1 image and 2 neighbours, {many} with 6 and 8"
    page = client.get(f"/cases/{large.id}/").content.decode()
    assert page.count('class="neighbour"') == 8
    assert page.count('class="heatmap"') == 6
    assert "fixture rationale" in page


def list_queries(client, listing: str) -> tuple[int, list]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"/api/v1/cases/?listing={listing}")
    assert response.status_code == 200
    return len(ctx.captured_queries), response.json()


@pytest.mark.django_db
def test_the_case_list_api_query_count_does_not_grow_with_cases(moderator):
    from tests.conftest import api_client_for

    one = open_cases(0.6, listing="listing-one")
    five = open_cases(0.6, 0.62, 0.64, 0.66, 0.68, listing="listing-five")
    for case in one + five:
        evidence_fill(case, images=2, neighbours=3)
    client = api_client_for(moderator)
    list_queries(client, "listing-one")  # warm the user's roles
    few, body_one = list_queries(client, "listing-one")
    many, body_five = list_queries(client, "listing-five")
    assert len(body_one) == 1
    assert len(body_five) == 5
    assert few == many, f"{few} queries for 1 case, {many} for 5"
    # every case carries its own evidence, from the same read model as the page
    assert [len(c["enrichment"]["neighbours"]["items"]) for c in body_five] == [3] * 5
    assert [c["verdicts"]["llm"]["verdict"]["rationale"] for c in body_five] == [
        "fixture rationale"
    ] * 5
