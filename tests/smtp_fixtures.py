"""Pytest fixtures around :class:`tests.smtp_server.SMTPTestServer`.

conftest.py re-exports them (``from tests.smtp_fixtures import smtp_server``)
so that any test module can ask for a running server by name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtp_server import SMTPTestServer


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A real SMTP server on 127.0.0.1, on a free port, fresh for each test."""
    with SMTPTestServer() as server:
        yield server
