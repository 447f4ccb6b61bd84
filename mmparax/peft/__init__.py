from .base import PEFTModule
from .parax import ExpertCenter, ParaX, ParaXAdapter, dynamic_depthwise_conv

__all__ = [
    'PEFTModule', 'ExpertCenter', 'ParaX', 'ParaXAdapter',
    'dynamic_depthwise_conv'
]
