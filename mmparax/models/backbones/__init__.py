from .parax_swin import ParaXSwin
from .peft_backbone import PEFTBackboneMixin
from .swin import Swin

__all__ = ['PEFTBackboneMixin', 'ParaXSwin', 'Swin']
