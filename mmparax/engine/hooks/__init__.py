from .average_buffers_hook import AverageBuffersHook, average_buffers
from .checkpoint_hook import CheckpointHook
from .peft_check_hook import PEFTCheckHook
from .peft_checkpoint_hook import PEFTCheckpointHook
from .rng_state_hook import RNGStateHook

__all__ = [
    'AverageBuffersHook', 'CheckpointHook', 'PEFTCheckHook',
    'PEFTCheckpointHook', 'RNGStateHook', 'average_buffers'
]
