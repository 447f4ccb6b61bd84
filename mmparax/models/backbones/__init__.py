from .convnext import ConvNeXt
from .parax_convnext import ParaXConvNeXt
from .parax_swin import ParaXSwin
from .parax_vmamba import ParaXVMamba
from .peft_backbone import PEFTBackboneMixin
from .swin import Swin
from .vmamba import VMamba

__all__ = [
    'ConvNeXt', 'PEFTBackboneMixin', 'ParaXConvNeXt', 'ParaXSwin',
    'ParaXVMamba', 'Swin', 'VMamba'
]
