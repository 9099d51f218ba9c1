import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Tests of the grpclib edge run on asyncio; packages of backend-neutral code override this."""
    return "asyncio"
