"""Analysis of trained models: ParaX expert activations, effective
receptive fields and linear CKA between layers.

The figures are drawn by :mod:`mmparax.analysis.plots` (matplotlib), which
is not imported here.
"""
from .cka import cka_matrix, collect_features, linear_cka, stage_layers
from .erf import (
    backbone_output,
    high_contribution_ratio,
    input_gradient_map,
    mean_erf,
    normalise,
)
from .experts import GateRecorder, group_names, record_gates, stage_adapters
from .inputs import (
    PRETRAINED,
    Normalizer,
    build_model,
    image_paths,
    iter_images,
    load_checkpoint_strict,
    load_config,
)

__all__ = [
    'cka_matrix', 'collect_features', 'linear_cka', 'stage_layers',
    'backbone_output', 'high_contribution_ratio', 'input_gradient_map',
    'mean_erf', 'normalise', 'GateRecorder', 'group_names', 'record_gates',
    'stage_adapters', 'PRETRAINED', 'Normalizer', 'build_model',
    'image_paths', 'iter_images', 'load_checkpoint_strict', 'load_config'
]
