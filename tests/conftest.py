import pytest

# The plugin an installed pyned registers as a pytest11 entry point; named the
# same, so pytest loads it once either way.
pytest_plugins = ["pyned.pytest_plugin"]

from pyned.testing import _syndrome


@pytest.fixture(scope="session")
def syndrome():
    return _syndrome()
