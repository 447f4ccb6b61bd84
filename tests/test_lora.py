"""LoRA's dropout acts on the layer input: ``B A dropout(x)``, not inside
the bottleneck (``B dropout(A x)``)."""
import torch

from mmparax.models import Swin
from mmparax.peft import LoRAUpdate
from mmparax.testing import tiny_swin_kwargs

P = 0.5


def test_dropout_acts_on_the_layer_input():
    torch.manual_seed(0)
    host = Swin(
        peft=dict(type='LoRA', rank=2, dropout=P), **tiny_swin_kwargs())
    updates = [m for m in host.modules() if isinstance(m, LoRAUpdate)]
    assert updates and all(u.dropout.p == P for u in updates)
    update = updates[0].train()
    torch.nn.init.normal_(update.B)  # B starts at zero
    total = update.start + update.B.shape[0]
    in_features = update.A.shape[1]
    # one non-zero input feature per token: input dropout keeps or drops it
    # whole, so each token's update is all of B A x / (1 - p) or nothing;
    # dropout on A x would keep a part of the rank-2 bottleneck
    tokens = 256
    x = torch.zeros(tokens, in_features)
    x[torch.arange(tokens), torch.arange(tokens) % in_features] = \
        torch.rand(tokens) + 0.5
    with torch.no_grad():
        delta = update.delta(x, total)[:, update.start:]
        full = (x @ update.A.T @ update.B.T) * update.scale / (1 - P)
    kept = torch.isclose(delta, full, rtol=1e-5, atol=1e-6).all(dim=1)
    dropped = (delta == 0).all(dim=1)
    assert bool((kept | dropped).all()), (~(kept | dropped)).sum()
    assert 0.3 < kept.float().mean() < 0.7  # dropout is active
    # evaluation: no dropout
    update.eval()
    with torch.no_grad():
        assert torch.allclose(
            update.delta(x, total)[:, update.start:], full * (1 - P),
            atol=1e-6)
