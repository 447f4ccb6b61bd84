"""A tiny host with BatchNorm and 1x1-conv MLPs (PoolFormer-like), for
tests of layer updates and of frozen norms; not registered, so the
contract tests leave it alone."""
import torch.nn as nn
from mmengine.model import BaseModule

from mmparax.models.backbones.host import PEFTHostMixin


class TinyBlock(nn.Module):
    """BatchNorm, a depthwise 3x3 conv (residual), then an MLP of two 1x1
    convs (``conv``) or two channels-last linears (residual)."""

    def __init__(self, dim: int, conv: bool):
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm2d(dim)
        self.mixer = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.mlp = nn.Sequential()
        self.mlp.add_module('fc1', layer(dim, 2 * dim))
        self.mlp.add_module('act', nn.GELU())
        self.mlp.add_module('fc2', layer(2 * dim, dim))

    def forward(self, x, host=None):
        """[B, C, H, W] -> same; ``host`` runs the module at its
        ``mlp_in`` site on the MLP's input."""
        x = x + self.mixer(self.norm(x))
        h = x if host is None else host.site_map(self, 'mlp_in', x)
        if self.conv:
            return x + self.mlp(h)
        return x + self.mlp(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyConvHost(PEFTHostMixin, BaseModule):
    """Two stages of two :class:`TinyBlock` each, widths ``dims``; the MLPs
    are 1x1 convs (``conv``) or linears. One site, ``mlp_in`` (read by
    ``fc1``). Returns the stages' maps."""

    block_sites = dict(mlp_in='mlp_in_adapter')
    site_readers = dict(mlp_in='fc1')
    layer_aliases = dict(fc1='stages.*.*.mlp.fc1', fc2='stages.*.*.mlp.fc2',
                         mixer='stages.*.*.mixer')
    out_indices = (0, 1)

    def __init__(self, conv=True, dims=(8, 16), peft=None):
        super().__init__()
        self.frozen_stages, self.with_cp = -1, False
        self.stem = nn.Conv2d(3, dims[0], 3, stride=2, padding=1)
        self.downs = nn.ModuleList(
            nn.Conv2d(a, b, 1) for a, b in zip(dims, dims[1:]))
        self.stages = nn.ModuleList(
            nn.Sequential(TinyBlock(d, conv), TinyBlock(d, conv))
            for d in dims)
        self.init_peft(peft)

    def peft_stages(self):
        return [(stage[0].norm.num_features, list(stage))
                for stage in self.stages]

    def new_module_names(self):
        return []

    def forward_block(self, block, x):
        return block(x, self)

    def forward(self, x):
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downs[i - 1](x)
            for block in stage:
                x = self.run_block(self.forward_block, block, x)
            outs.append(x)
        return tuple(outs)
