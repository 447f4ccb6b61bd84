# Importing registers the backbones, PEFT methods, hooks, optimizer
# constructors, data sets and metrics.
from . import apis, datasets, engine, models  # noqa: F401,E402
from .version import __version__

__all__ = ['__version__']
