from .version import __version__

from . import models  # noqa: F401,E402  (registers the backbones)

__all__ = ['__version__']
