"""A PEFT method kept outside mmparax: a config imports this module with
``custom_imports`` (its folder on PYTHONPATH), which registers it."""
import torch
import torch.nn as nn

from mmparax.peft import PEFTMethod, PEFTModule
from mmparax.registry import PEFT_METHODS


class ScaleShift(PEFTModule):
    """x * scale + shift per channel; [B, L, C] -> [B, L, C]."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def reset_parameters(self):
        self.switch_off()

    @torch.no_grad()
    def switch_off(self):
        self.scale.fill_(1.0)
        self.shift.zero_()

    def forward(self, x, hw_shape=None):
        return x * self.scale + self.shift


@PEFT_METHODS.register_module()
class MySSF(PEFTMethod):
    """A ScaleShift after every residual add of the host."""

    default_sites = ('residual', )

    def attach(self, host):
        self.add_site_modules(host, lambda dim, site, stage: ScaleShift(dim))
