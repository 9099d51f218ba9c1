import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Adapters are backend-neutral: every async test runs on asyncio and on trio."""
    return request.param  # type: ignore[no-any-return]
