import os
import socket

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from moderation_portal.core.access import APPEALS, MODERATOR, POLICY_ADMIN, QA_LEAD

pytest_plugins = ["tests.enrichment_fixtures"]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_sessionstart(session):
    # The suite runs against the machine's real services; `make test` starts them if needed.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql") and not _reachable(
        "127.0.0.1", 5432
    ):
        raise pytest.UsageError("PostgreSQL is not running on 127.0.0.1:5432 (make services)")
    if settings.REDIS_URL and not _reachable("127.0.0.1", 6379):
        raise pytest.UsageError("Redis is not running on 127.0.0.1:6379 (make services)")


@pytest.fixture(autouse=True)
def _defaults(request):
    """Roles, policies, ladder and queues exist in every database test (transactional tests
    flush them)."""
    names = request.fixturenames
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in names or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
    elif "db" in names or marker:
        request.getfixturevalue("db")
    else:
        return
    from reviews.policies.bootstrap import defaults_ensure

    defaults_ensure()


@pytest.fixture(autouse=True)
def _media(request, tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    # Password hashing is slow by design; tests that log in through the test client still check
    # real passwords. Browser tests log in to a separate server process with its own hashers.
    if not request.node.get_closest_marker("browser"):
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _person(username: str, *roles: str) -> User:
    user = User.objects.create_user(username=username, password="correct horse battery staple")
    user.groups.set(Group.objects.filter(name__in=roles))
    return user


@pytest.fixture
def moderator(db):
    return _person("mod-ana", MODERATOR)


@pytest.fixture
def moderator2(db):
    return _person("mod-ben", MODERATOR)


@pytest.fixture
def appeals_staff(db):
    return _person("appeals-cy", APPEALS)


@pytest.fixture
def qa_lead(db):
    return _person("qa-dee", QA_LEAD)


@pytest.fixture
def policy_admin(db):
    return _person("admin-eve", POLICY_ADMIN)


@pytest.fixture
def outsider(db):
    """Logged in, but holds no role in the portal."""
    return _person("outsider-fay")


@pytest.fixture
def service_token(db):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_service_token", "detection-tier", stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def tier_client(service_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {service_token}")
    return client


@pytest.fixture
def marketplace_client(db):
    """The marketplace's machine account (role `marketplace`), as it would call the API."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_service_token", "marketplace", "--role", "marketplace", stdout=out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out.getvalue().strip()}")
    return client


def api_client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def eager_celery():
    from moderation_portal.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PORTAL_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="PORTAL_SKIP_BROWSER=1")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)
