from .checkpoint import (
    check_fit,
    load_backbone_state_dict,
    select_prefix,
    unwrap_state_dict,
)
from .params import (
    backbone_components,
    build_config_model,
    output_norms_note,
    parameter_report,
    trainable_summary,
)

__all__ = [
    'check_fit', 'load_backbone_state_dict', 'select_prefix',
    'unwrap_state_dict', 'backbone_components', 'build_config_model',
    'output_norms_note', 'parameter_report', 'trainable_summary'
]
