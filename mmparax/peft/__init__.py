from . import adaptformer, colora, lorand, mona, repadapter, snell, vpt  # noqa: F401,E501
from .base import PEFTMethod, PEFTModule, build_peft_method
from .lora import LoRA, LoRAUpdate
from .parax import ExpertCenter, ParaX, ParaXAdapter, dynamic_depthwise_conv

__all__ = [
    'PEFTMethod', 'PEFTModule', 'build_peft_method', 'ExpertCenter', 'LoRA',
    'LoRAUpdate', 'ParaX', 'ParaXAdapter', 'dynamic_depthwise_conv'
]
