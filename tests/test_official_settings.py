"""The settings around each method's modules follow its authors'
dense-prediction code (see the provenance table of each
``configs/<method>/README.md``)."""
from pathlib import Path

import pytest
from mmengine.config import Config

from mmparax.peft import LoRA
from mmparax.peft.lora import LoRAUpdate
from mmparax.utils import build_config_model

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def build_backbone(name):
    return build_config_model(Config.fromfile(CONFIGS / name),
                              backbone_only=True)


def test_lora_defaults_to_alpha_one():
    """loralib's and mmpretrain's default: the update is scaled by 1 / r."""
    assert LoRA(rank=16).alpha == 1.0
    assert LoRAUpdate(8, 8, rank=16, alpha=LoRA(rank=16).alpha).scale == \
        1 / 16


@pytest.mark.slow
@pytest.mark.parametrize('name', [
    'lora/lora_swin-b_upernet_8xb2-160k_ade20k-512x512.py',
    'lora/lora_convnext-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    'lora/lora_vit-b-mae_8xb128-100e_svhn.py',
])
def test_lora_configs_scale_by_one_over_rank(name):
    cfg = Config.fromfile(CONFIGS / name)
    peft = cfg.model.backbone.peft
    assert peft.alpha == 1
    updates = [m for m in build_backbone(name).modules()
               if isinstance(m, LoRAUpdate)]
    assert updates and all(m.scale == 1 / peft.rank for m in updates)


@pytest.mark.parametrize('method', [
    'vpt', 'lora', 'adaptformer', 'repadapter', 'lorand', 'snell', 'colora',
    'mona', 'parax'
])
def test_each_method_readme_gives_the_sources_of_its_settings(method):
    text = (CONFIGS / method / 'README.md').read_text()
    assert '## Settings and their sources' in text
    table = text.split('## Settings and their sources')[1].split('\n## ')[0]
    assert '| setting | ours | official | source | why ours differs |' in table
    rows = [r for r in table.splitlines() if r.startswith('| ')][1:]
    assert len(rows) >= 6
    assert any(r.startswith('| output norms |') for r in rows)
