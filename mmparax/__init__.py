from .version import __version__

# Importing registers the backbones, hooks and optimizer constructors.
from . import engine, models  # noqa: F401,E402

__all__ = ['__version__']
