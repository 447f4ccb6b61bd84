"""A method defined and registered here, with no other file edited, works
on every host it fits and is counted by ``tools/analysis/params_table.py``."""
import pytest
import torch
import torch.nn as nn

from mmparax.peft import PEFTMethod, PEFTModule
from mmparax.registry import PEFT_METHODS
from mmparax.testing import switch_off
from mmparax.testing.peft import (
    HOSTS,
    build_pair,
    hosts_of,
    method_settings,
    perturb,
)
from mmparax.testing.tools import load_tool


class ScaleShift(PEFTModule):
    """x * scale + shift per channel; [B, L, C] -> [B, L, C]."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def switch_off(self):
        self.scale.fill_(1.0)
        self.shift.zero_()

    def forward(self, x, hw_shape=None):
        return x * self.scale + self.shift


class SSF(PEFTMethod):
    """Scale and shift the stream after every residual add."""

    default_sites = ('residual', )

    def attach(self, host):
        self.add_site_modules(host, lambda dim, site, stage: ScaleShift(dim))


@pytest.fixture
def ssf():
    PEFT_METHODS.register_module(module=SSF)
    yield 'SSF'
    PEFT_METHODS.module_dict.pop('SSF')


def test_a_method_registered_here_works_on_every_host(ssf):
    assert hosts_of(ssf) == list(HOSTS)
    for host in hosts_of(ssf):
        plain = build_pair(host).eval()
        model = build_pair(host, method_settings(ssf)).eval()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        modules = [m for m in model.modules() if isinstance(m, ScaleShift)]
        assert len(modules) >= sum(len(b) for _, b in model.peft_stages())
        assert trainable == set(model.peft_trainable_names())
        assert sum(p.numel() for n, p in model.named_parameters()
                   if n in trainable) == sum(2 * m.scale.numel()
                                             for m in modules)
        model.load_state_dict(plain.state_dict(), strict=False)
        x = torch.randn(*HOSTS[host][2])
        with torch.no_grad():
            expected = plain(x)
            for a, b in zip(model(x), expected):  # identity at init
                torch.testing.assert_close(a, b)
            perturb(model)
            assert any(not torch.allclose(a, b)
                       for a, b in zip(model(x), expected)), host
            switch_off(model)
            for a, b in zip(model(x), expected):
                torch.testing.assert_close(a, b)
        perturb(model)
        sum(o.square().sum() for o in model.train()(x)).backward()
        assert all(model.get_parameter(n).grad is not None
                   for n in trainable), host


@pytest.mark.e2e
def test_params_table_counts_a_method_registered_here(ssf, tmp_path):
    config = tmp_path / 'ssf_swin.py'
    _, kwargs, _ = HOSTS['Swin']
    config.write_text(f'model = dict(backbone=dict(type="mmparax.Swin", '
                      f'peft=dict(type="SSF"), **{kwargs!r}))\n')
    metafile = tmp_path / 'metafile.yml'
    metafile.write_text(
        'Collections:\n- Name: SSF\nModels:\n- Name: ssf_swin\n'
        f'  In Collection: SSF\n  Config: {config}\n'
        '  Metadata:\n    Training Data: ADE20K\n'
        '    Architecture: [Swin-B, UPerNet]\n')
    rows = load_tool('analysis/params_table.py').main([str(metafile)])
    model = build_pair('Swin', method_settings(ssf))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable > 0
    assert [(r['method'], r['trainable']) for r in rows] == [('SSF',
                                                               trainable)]
