import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reviews.fixtures_evidence import evidence_fill
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
    assert page.count('class="neighbour"') == 8 and page.count('class="heatmap"') == 6 and "fixture rationale" in page
