import pytest
import torch

from mmparax.models import ParaXSwin, Swin
from mmparax.testing import switch_off

TINY = dict(
    embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8),
    window_size=7, drop_path_rate=0.1)
PARAX = dict(hidden_dim=8, router_hidden=4)


def test_switched_off_equals_plain_swin():
    torch.manual_seed(0)
    plain = Swin(**TINY).eval()
    adapted = ParaXSwin(parax=PARAX, **TINY).eval()
    missing, unexpected = adapted.load_state_dict(
        plain.state_dict(), strict=False)
    assert not unexpected
    assert all('adapter' in k or 'expert_centers' in k for k in missing)
    switch_off(adapted)
    x = torch.randn(2, 3, 75, 90)  # not a multiple of the window: padding
    with torch.no_grad():
        for a, b in zip(adapted(x), plain(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # and the adapters do change the output once switched on
        adapted.stages[0].blocks[0].adapter1.layer_scale.fill_(1.0)
        assert not torch.allclose(adapted(x)[0], plain(x)[0])


def test_freeze_set():
    model = ParaXSwin(parax=PARAX, **TINY)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, _ in model.named_parameters():
        parts = name.split('.')
        is_peft = 'adapter1' in parts or 'adapter2' in parts or \
            'expert_centers' in parts
        is_out_norm = parts[0] in ('norm0', 'norm1', 'norm2', 'norm3')
        assert (name in trainable) == (is_peft or is_out_norm), name
    frozen_roots = {'patch_embed', 'stages'}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n.split('.')[0] for n in frozen} == frozen_roots
    assert any('downsample' in n for n in frozen)
    assert any('relative_position_bias_table' in n for n in frozen)
    groups = model.peft_components()
    assert set(groups) == {
        'adapters', 'expert_centers', 'output_norms', 'pretrained'
    }
    assert set(groups['pretrained']) == frozen
    # train() keeps the freeze and keeps drop path active in frozen blocks
    model.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} \
        == trainable
    assert model.stages[2].blocks[3].attn.drop.training


def test_frozen_params_unchanged_names():
    plain = set(dict(Swin(**TINY).named_parameters()))
    adapted = set(dict(ParaXSwin(parax=PARAX, **TINY).named_parameters()))
    assert plain <= adapted


@pytest.mark.slow
@pytest.mark.parametrize('arch, parax, expected', [
    (dict(embed_dims=128, num_heads=(4, 8, 16, 32)), {}, 5_242_992),
    (dict(embed_dims=192, num_heads=(6, 12, 24, 48)), {}, 7_302_384),
    (dict(embed_dims=128, num_heads=(4, 8, 16, 32)),
     dict(layer_scale=1e-5, res_scale=None), 5_194_864),
])
def test_exact_trainable_counts(arch, parax, expected):
    model = ParaXSwin(depths=(2, 2, 18, 2), parax=parax, **arch)
    assert sum(p.numel() for p in model.parameters()
               if p.requires_grad) == expected


def test_one_center_per_stage_shared_by_its_blocks():
    model = ParaXSwin(parax=PARAX, **TINY)
    for i, centers in enumerate(model.expert_centers):
        assert len(centers) == 1
        assert centers[0].num_experts == TINY['depths'][i]
    torch.manual_seed(0)
    model(torch.randn(1, 3, 64, 64))[3].square().sum().backward()
    for centers in model.expert_centers:
        assert centers[0].down.grad.abs().sum() > 0


def test_grouped_centers_route_by_block():
    model = ParaXSwin(parax=dict(PARAX, blocks_per_center=2), **TINY)
    assert len(model.expert_centers[2]) == 2
    assert model.stages[2].blocks[1].adapter1.center_key == (2, 0)
    assert model.stages[2].blocks[2].adapter2.center_key == (2, 1)
