from .convnext import ConvNeXt
from .generic import AnyBackbone
from .host import PEFTBackboneMixin, PEFTHostMixin
from .parax_aliases import ParaXConvNeXt, ParaXSwin, ParaXViT, ParaXVMamba
from .swin import Swin
from .vit import ViT
from .vmamba import VMamba

__all__ = [
    'AnyBackbone', 'ConvNeXt', 'PEFTBackboneMixin', 'PEFTHostMixin',
    'ParaXConvNeXt', 'ParaXSwin', 'ParaXViT', 'ParaXVMamba', 'Swin', 'ViT',
    'VMamba'
]
