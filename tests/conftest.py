import os

import pytest

from mmparax.apis.trusted_loading import KEY_ENV


@pytest.fixture(autouse=True, scope='session')
def checkpoint_key_outside_home(tmp_path_factory):
    """Runs of the tests sign their checkpoint records with a key of their
    own, not the user's ~/.config/mmparax/checkpoint-key."""
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(
        tmp_path_factory.mktemp('keys') / 'checkpoint-key')
    yield
    if previous is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = previous


def pytest_collection_modifyitems(items):
    """A run of a script of tools/ (``e2e``) is ``slow`` too."""
    for item in items:
        if item.get_closest_marker('e2e'):
            item.add_marker(pytest.mark.slow)
