"""VPT-deep on Swin: prompts in every window of the shifted-window attention,
checked against a literal transcription with hand-built windows."""
import math

import pytest
import torch
import torch.nn as nn

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.vpt import VPT, Prompts
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

DEPTHS = (2, 2, 3, 2)
WIDTHS = (16, 32, 64, 128)


def swin(num_tokens=3, dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    model = Swin(peft=dict(type='VPT', num_tokens=num_tokens),
                 **tiny_swin_kwargs(depths=DEPTHS, **overrides))
    with torch.no_grad():  # position biases start at 0 before init_weights
        for name, p in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                p.normal_(std=0.5)
    return model.to(dtype).eval()


def branch(model, block, x, hw):
    """The attention branch of ``block`` with its prompts, as the host runs
    it: the prompts from the ``attn_tokens`` site, then the attention."""
    return model.attention_branch(block, x, hw, block.attn_prompts(x, hw))


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def literal_attention(block, x, hw, prompts):
    """The attention branch of an mmseg SwinBlock with ``prompts`` [p, C]
    (already normalised) prepended to every window, written out window by
    window: pad, cyclic shift, (p+N) x (p+N) softmax attention with the
    relative position bias and the shift mask on the token-token part only,
    token rows kept, shift back, crop. Eval mode (no dropout)."""
    w_msa = block.attn.w_msa
    ws, shift = block.attn.window_size, block.attn.shift_size
    B, _, C = x.shape
    H, W = hw
    heads, p, N = w_msa.num_heads, prompts.shape[0], ws * ws
    d = C // heads
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    grid = x.new_zeros(B, Hp, Wp, C)
    grid[:, :H, :W] = x.view(B, H, W, C)
    grid = torch.roll(grid, (-shift, -shift), (1, 2))

    def region(i, n):
        if shift == 0 or i < n - ws:
            return 0
        return 1 if i < n - shift else 2

    table = w_msa.relative_position_bias_table
    out = torch.zeros_like(grid)
    for b in range(B):
        for r in range(0, Hp, ws):
            for c in range(0, Wp, ws):
                coords = [(r + i, c + j) for i in range(ws)
                          for j in range(ws)]
                tokens = torch.stack([grid[b, y, z] for y, z in coords])
                seq = torch.cat([prompts, tokens])  # [p + N, C]
                qkv = seq @ w_msa.qkv.weight.T + w_msa.qkv.bias
                extra = torch.zeros(heads, p + N, p + N, dtype=x.dtype)
                for m, (y1, z1) in enumerate(coords):
                    for n, (y2, z2) in enumerate(coords):
                        index = (y1 - y2 + ws - 1) * (2 * ws - 1) + (
                            z1 - z2 + ws - 1)
                        extra[:, p + m, p + n] = table[index]
                        if (region(y1, Hp), region(z1, Wp)) != (
                                region(y2, Hp), region(z2, Wp)):
                            extra[:, p + m, p + n] -= 100
                heads_out = []
                for h in range(heads):
                    q = qkv[:, h * d:(h + 1) * d]
                    k = qkv[:, C + h * d:C + (h + 1) * d]
                    v = qkv[:, 2 * C + h * d:2 * C + (h + 1) * d]
                    logits = q @ k.T / math.sqrt(d) + extra[h]
                    heads_out.append(torch.softmax(logits, -1) @ v)
                y = torch.cat(heads_out, -1) @ w_msa.proj.weight.T \
                    + w_msa.proj.bias
                for (yy, zz), value in zip(coords, y[p:]):
                    out[b, yy, zz] = value
    out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :H, :W].reshape(B, H * W, C)


@pytest.mark.parametrize('hw', [(14, 7), (9, 12)])  # no padding / padding
@pytest.mark.parametrize('shifted', [False, True])
def test_literal_transcription_is_mmseg_without_prompts(hw, shifted):
    """The transcription below with no prompt is mmseg's ShiftWindowMSA."""
    model = swin()
    block = model.stages[1].blocks[int(shifted)]
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.float64)
    with torch.no_grad():
        expected = block.attn(x, hw)
        got = literal_attention(block, x, hw, x.new_zeros(0, 32))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('hw', [(14, 7), (9, 12)])
@pytest.mark.parametrize('shifted', [False, True])
def test_window_prompts_match_the_formula(hw, shifted):
    model = swin(num_tokens=4)
    block = model.stages[1].blocks[int(shifted)]
    assert block.attn.shift_size == (3 if shifted else 0)
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.float64)
    module = block.attn_prompts
    with torch.no_grad():
        got = branch(model, block, x, hw)
        prompts = layer_norm(module.prompts, block.norm1)
        expected = literal_attention(block, x, hw, prompts)
        assert not torch.allclose(got, block.attn(x, hw))  # prompts act
    torch.testing.assert_close(got, expected)


def test_the_host_runs_the_attention_through_the_prompts():
    model = swin()
    block = model.stages[2].blocks[1]
    hw = (5, 9)
    x = torch.randn(2, 45, 64, dtype=torch.float64)
    with torch.no_grad():
        got = model.forward_block(block, x, hw)
        prompts = layer_norm(block.attn_prompts.prompts, block.norm1)
        s = x + literal_attention(block, block.norm1(x), hw, prompts)
        expected = block.ffn(block.norm2(s), identity=s)
    torch.testing.assert_close(got, expected)


def test_prompts_change_the_output():
    plain = Swin(**tiny_swin_kwargs(depths=DEPTHS)).eval()
    adapted = swin(dtype=torch.float32)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 75, 90)
    with torch.no_grad():
        for a, b in zip(adapted(x), plain(x)):
            assert a.shape == b.shape and not torch.allclose(a, b)


def test_dropouts_and_drop_path_where_mmseg_has_them():
    """Attention dropout on the [B*nW, heads, N, p+N] softmax, prompt dropout
    on the [p, C] prompts and drop path on the branch output."""
    model = swin(num_tokens=3, dtype=torch.float32)
    block = model.stages[0].blocks[1]
    seen = {}

    class Record(nn.Module):

        def __init__(self, key, factor=1.):
            super().__init__()
            self.key, self.factor = key, factor

        def forward(self, t):
            seen[self.key] = t
            return t * self.factor

    module = block.attn_prompts
    reference = branch(model, block, torch.ones(1, 63, 16), (7, 9)).detach()
    block.attn.w_msa.attn_drop = Record('attn')
    block.attn.drop = Record('out', 2.)
    module.dropout = Record('prompts')
    out = branch(model, block, torch.ones(1, 63, 16), (7, 9))
    assert seen['attn'].shape == (2, 1, 49, 3 + 49)  # 2 windows, 1 head
    torch.testing.assert_close(seen['attn'].sum(-1),
                               torch.ones(2, 1, 49))
    assert seen['prompts'] is module.prompts
    torch.testing.assert_close(seen['out'], reference)
    torch.testing.assert_close(out, 2 * reference)


def test_prompt_dropout_only_in_training():
    module = Prompts(5, 8, bound=0.5, dropout=0.5)
    module.train()
    assert not torch.equal(module.tokens(), module.prompts)
    module.eval()
    assert torch.equal(module.tokens(), module.prompts)


def test_placement_count_and_initialisation():
    p = 3
    model = swin(num_tokens=p, dtype=torch.float32)
    bound = math.sqrt(6 / (3 * 4 * 4 + 16))  # patch 4, embed dims 16
    for (channels, blocks), width in zip(model.peft_stages(), WIDTHS):
        assert channels == width
        for block in blocks:
            module = block.attn_prompts
            assert type(module) is Prompts and module.bound == bound
            assert module.prompts.shape == (p, width)
            assert module.prompts.abs().max() <= bound
            assert module.prompts.std() > bound / 3  # uniform, not zeros
            others = [m for name, m in block.named_children()
                      if isinstance(m, Prompts) and name !=
                      'attn_prompts']
            assert not others
    groups = model.peft_components()
    named = dict(model.named_parameters())
    prompts = sum(named[n].numel() for n in groups['prompts'])
    assert prompts == p * sum(d * c for d, c in zip(DEPTHS, WIDTHS))
    norms = sum(named[n].numel() for n in groups['output_norms'])
    assert norms == 2 * sum(WIDTHS)
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    assert trainable == prompts  # the output norms stay at their init
    with torch.no_grad():
        model.stages[0].blocks[0].attn_prompts.prompts.zero_()
    model.init_weights()  # no checkpoint: the method's modules re-initialise
    assert model.stages[0].blocks[0].attn_prompts.prompts.abs().sum() > 0


def test_init_bound_can_be_given():
    model = Swin(peft=dict(type='VPT', num_tokens=2, init_bound=1e-3),
                 **tiny_swin_kwargs())
    values = torch.cat([m.prompts.flatten() for m in model.modules()
                        if isinstance(m, Prompts)])
    assert values.abs().max() <= 1e-3


def test_switch_off_is_refused():
    module = Prompts(2, 8, bound=0.1)
    with pytest.raises(NotImplementedError, match='no exact no-op'):
        module.switch_off()


@pytest.mark.parametrize('cls, kwargs, why', [
    (ConvNeXt, tiny_convnext_kwargs(), 'depthwise convolutions'),
    (VMamba, dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0)),
     'selective scans'),
])
def test_hosts_without_attention_raise(cls, kwargs, why):
    with pytest.raises(ValueError) as info:
        cls(peft=dict(type='VPT', num_tokens=3), **kwargs)
    message = str(info.value)
    assert 'VPT' in message and cls.__name__ in message
    assert why in message and 'attention' in message


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_tokens=0), 'num_tokens must be a positive integer, got 0'),
    (dict(num_tokens=2.5), 'num_tokens must be a positive integer'),
    (dict(num_tokens=True), 'num_tokens must be a positive integer'),
    (dict(dropout=1.0), r'dropout must be a number in \[0, 1\), got 1.0'),
    (dict(dropout=-0.1), r'dropout must be a number in \[0, 1\)'),
    (dict(dropout='0.1'), r'dropout must be a number in \[0, 1\)'),
    (dict(init_bound=0), 'init_bound must be a positive number or None'),
    (dict(init_bound='x'), 'init_bound must be a positive number'),
])
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match='VPT: ' + match):
        VPT(**kwargs)


def test_unknown_argument_names_the_method():
    with pytest.raises(TypeError, match="VPT: .*'num_prompts'"):
        Swin(peft=dict(type='VPT', num_prompts=3), **tiny_swin_kwargs())


def test_works_with_fp16_autocast_shapes():
    """Shapes and dtypes stay those of mmseg's attention under bfloat16
    autocast on the CPU."""
    model = swin(dtype=torch.float32)
    block = model.stages[1].blocks[1]
    x = torch.randn(2, 99, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got = branch(model, block, x, (9, 11))
        expected = block.attn(x, (9, 11))
    assert got.shape == expected.shape and got.dtype == expected.dtype


def test_first_block_drops_prompts_per_sample():
    """The official Swin prepends the first block's prompts to the patch
    embedding and drops them out per sample; the other blocks' prompts get
    one mask per batch."""
    torch.manual_seed(0)
    model = Swin(peft=dict(type='VPT', num_tokens=3, dropout=0.5),
                 **tiny_swin_kwargs(depths=DEPTHS)).double().eval()
    flags = [b.attn_prompts.per_sample for _, blocks in model.peft_stages()
             for b in blocks]
    assert flags == [True] + [False] * (sum(DEPTHS) - 1)

    block = model.stages[0].blocks[0]
    module = block.attn_prompts.train()
    assert module.tokens(4).shape == (4, 3, 16)
    # sample b's windows see sample b's prompts: scale them per sample
    factors = torch.tensor([2., 0.5], dtype=torch.float64)[:, None, None]

    class PerSample(nn.Module):

        def forward(self, t):
            assert t.shape == (2, 3, 16)
            return t * factors

    module.dropout = PerSample()
    x = torch.randn(2, 63, 16, dtype=torch.float64)
    out = branch(model, block, x, (7, 9))
    prompts = module.prompts.detach().clone()
    module.per_sample, module.dropout = False, nn.Identity()
    for b in range(2):
        with torch.no_grad():
            module.prompts.copy_(prompts * factors[b])
        torch.testing.assert_close(out[b:b + 1],
                                   branch(model, block, x[b:b + 1], (7, 9)))
    # one mask per batch elsewhere: identical samples stay identical
    model.stages[0].blocks[1].attn_prompts.train()
    same = branch(model, model.stages[0].blocks[1],
                  x[:1].expand(4, -1, -1), (7, 9))
    assert all(torch.equal(same[0], s) for s in same)
    module.per_sample = True
    module.dropout = nn.Dropout(0.5)
    torch.manual_seed(1)
    first = branch(model, block, x[:1].expand(4, -1, -1), (7, 9))
    assert not all(torch.equal(first[0], s) for s in first)
