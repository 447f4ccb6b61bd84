"""Helpers for tests of PEFT methods on host backbones."""
import torch
import torch.nn as nn

from mmparax.peft import LoRAUpdate, ParaXAdapter


@torch.no_grad()
def switch_off(model: nn.Module) -> nn.Module:
    """Make every method module of ``model`` a no-op, in place.

    ParaX adapters output 0 and pass the stream through unchanged (layer
    scale and bias 0, residual scale 1, residual bias 0); LoRA updates get
    ``B = 0``.
    """
    for module in model.modules():
        if isinstance(module, ParaXAdapter):
            if module.layer_scale_init is not None:
                module.layer_scale.zero_()
                module.layer_bias.zero_()
            if module.res_scale_init is not None:
                module.res_scale.fill_(1.0)
                module.res_bias.zero_()
        elif isinstance(module, LoRAUpdate):
            module.B.zero_()
    return model
