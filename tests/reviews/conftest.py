"""Fixtures shared by the review tests."""

import pytest

from tests.llm_verify.conftest import llm_serving


@pytest.fixture
def llm(settings):
    """A fake OpenAI-protocol server on a socket that the portal's LLM verification calls."""
    with llm_serving(settings) as server:
        yield server


@pytest.fixture
def tdb_server():
    """A local stand-in for the Transparency Database's statement API, on a real socket."""
    from tests.reviews.tdb_server import TdbServer

    server = TdbServer(token="tdb-test-token")
    server.start()
    yield server
    server.stop()
