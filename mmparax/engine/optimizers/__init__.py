from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper
from .peft_constructor import PEFTOptimWrapperConstructor

__all__ = ['CPUAmpOptimWrapper', 'PEFTOptimWrapperConstructor']
