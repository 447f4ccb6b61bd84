from .adaptformer import AdaptFormer, AdaptFormerAdapter
from .base import (
    HOST_CAPABILITIES,
    LayerUpdate,
    LinearUpdate,
    PEFTMethod,
    PEFTModule,
    build_peft_method,
)
from .colora import CoLoRA, CoLoRAConv, CoLoRAPointwise
from .lora import LoRA, LoRAUpdate
from .lorand import LoRand, LoRandAdapter
from .mona import Mona, MonaAdapter
from .parax import AdapterSettings, ExpertCenter, ParaX, ParaXAdapter
from .repadapter import RepAdapter, RepAdapterModule
from .snell import SNELL, SNELLUpdate
from .vpt import VPT, Prompts

__all__ = [
    'PEFTMethod', 'PEFTModule', 'LayerUpdate', 'LinearUpdate',
    'build_peft_method', 'HOST_CAPABILITIES', 'AdapterSettings',
    'ExpertCenter', 'ParaX', 'ParaXAdapter', 'VPT', 'Prompts', 'LoRA',
    'LoRAUpdate', 'AdaptFormer', 'AdaptFormerAdapter', 'RepAdapter',
    'RepAdapterModule', 'LoRand', 'LoRandAdapter', 'SNELL', 'SNELLUpdate',
    'CoLoRA', 'CoLoRAConv',
    'CoLoRAPointwise', 'Mona', 'MonaAdapter'
]
