import pytest


def pytest_collection_modifyitems(items):
    """A run of a script of tools/ (``e2e``) is ``slow`` too."""
    for item in items:
        if item.get_closest_marker('e2e'):
            item.add_marker(pytest.mark.slow)
