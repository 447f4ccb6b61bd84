from .convnext import ConvNeXt
from .host import PEFTBackboneMixin, PEFTHostMixin
from .parax_aliases import ParaXConvNeXt, ParaXSwin, ParaXVMamba
from .swin import Swin
from .vmamba import VMamba

__all__ = [
    'ConvNeXt', 'PEFTBackboneMixin', 'PEFTHostMixin', 'ParaXConvNeXt',
    'ParaXSwin', 'ParaXVMamba', 'Swin', 'VMamba'
]
