import pytest

from tests.e2e.deployment import Deployment, free_port


@pytest.fixture
def deployment(tmp_path):
    """A main server's data dir and free port, driven through deploy.sh; everything stopped afterwards."""
    d = Deployment(tmp_path / "data", free_port())
    yield d
    d.stop_all()
