"""Fixtures shared by the review tests."""

import pytest

from tests.llm_verify.conftest import FakeLLMServer


@pytest.fixture
def llm(settings):
    """A fake OpenAI-protocol server on a socket that the portal's LLM verification calls."""
    server = FakeLLMServer()
    server.start()
    settings.LLM_BASE_URL = server.base_url
    settings.LLM_MODEL = "fake-model"
    settings.LLM_READ_TIMEOUT_SECONDS = 2.0
    settings.LLM_DEADLINE_SECONDS = 10.0
    settings.LLM_BREAKER_FAILURES = 50
    from llm_verify import services as llm_services

    llm_services._clients.clear()
    yield server
    server.stop()
    llm_services._clients.clear()


@pytest.fixture
def tdb_server():
    """A local stand-in for the Transparency Database's statement API, on a real socket."""
    from tests.reviews.tdb_server import TdbServer

    server = TdbServer(token="tdb-test-token")
    server.start()
    yield server
    server.stop()
