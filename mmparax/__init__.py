from .version import __version__

# Importing registers the backbones, PEFT methods, hooks, optimizer
# constructors, data sets and metrics.
from . import apis, datasets, engine, models  # noqa: F401,E402

__all__ = ['__version__']
