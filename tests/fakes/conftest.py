"""Fixtures shared by the fakes' official-SDK tests."""

from tests.fakes.openai_clients import sdk_client

__all__ = ["sdk_client"]
