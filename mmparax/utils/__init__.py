from .checkpoint import (check_fit, load_backbone_state_dict, select_prefix,
                         unwrap_state_dict)

__all__ = [
    'check_fit', 'load_backbone_state_dict', 'select_prefix',
    'unwrap_state_dict'
]
