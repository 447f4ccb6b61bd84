from .version import __version__

# Importing registers the backbones, PEFT methods, hooks and optimizer
# constructors.
from . import apis, engine, models  # noqa: F401,E402

__all__ = ['__version__']
