import pytest

from pyned.testing import _syndrome


@pytest.fixture(scope="session")
def syndrome():
    return _syndrome()
