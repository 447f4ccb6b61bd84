"""Helpers for tests of PEFT methods on host backbones."""
import torch
import torch.nn as nn

from mmparax.peft import PEFTModule


@torch.no_grad()
def switch_off(model: nn.Module) -> nn.Module:
    """Make every method module of ``model`` a no-op, in place, through
    :meth:`PEFTModule.switch_off` (e.g. ParaX adapters output 0, LoRA
    updates get ``B = 0``)."""
    for module in model.modules():
        if isinstance(module, PEFTModule):
            module.switch_off()
    return model
