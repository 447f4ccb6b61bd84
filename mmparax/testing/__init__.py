"""Small data sets and checkpoints in real on-disk formats and key layouts,
for tests, demos and checks without downloads."""
from .checkpoints import (
    swin_to_microsoft,
    tiny_swin_kwargs,
    tiny_swin_state_dict,
    write_checkpoint,
)
from .data import class_colour, make_ade20k

__all__ = [
    'class_colour', 'make_ade20k', 'swin_to_microsoft', 'tiny_swin_kwargs',
    'tiny_swin_state_dict', 'write_checkpoint'
]

from .coco import (  # noqa: E402
    COCO_STUFF,
    COCO_STUFF_IDS,
    COCO_THING_IDS,
    COCO_THINGS,
    coco_categories,
    coco_metainfo,
    id2rgb,
    make_coco_instance,
    make_coco_panoptic,
)
from .convnext import (  # noqa: E402
    convnext_to_facebook,
    tiny_convnext_kwargs,
    tiny_convnext_state_dict,
)

__all__ += [
    'COCO_STUFF', 'COCO_STUFF_IDS', 'COCO_THING_IDS', 'COCO_THINGS',
    'coco_categories', 'coco_metainfo', 'id2rgb',
    'make_coco_instance', 'make_coco_panoptic', 'convnext_to_facebook',
    'tiny_convnext_kwargs', 'tiny_convnext_state_dict'
]
from .classification import (  # noqa: E402
    make_cifar100,
    make_food101_raw,
    make_image_folders,
    make_imagenet_r_raw,
    make_svhn_mat,
)
from .peft import switch_off  # noqa: E402
from .remote_sensing import make_loveda, make_potsdam  # noqa: E402
from .tools import (  # noqa: E402
    check_ok,
    check_weights_only,
    load_tool,
    run_tool,
    short_demo_config,
    two_iteration_options,
)
from .vit import tiny_vit_kwargs, tiny_vit_state_dict, vit_to_mae, vit_to_timm  # noqa: E402

__all__ += [
    'switch_off', 'check_ok', 'check_weights_only', 'load_tool', 'run_tool',
    'make_loveda',
    'make_potsdam',
    'tiny_vit_kwargs', 'tiny_vit_state_dict', 'vit_to_mae', 'vit_to_timm',
    'make_cifar100', 'make_food101_raw', 'make_image_folders',
    'make_imagenet_r_raw', 'make_svhn_mat', 'short_demo_config',
    'two_iteration_options'
]
