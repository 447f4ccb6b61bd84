from .peft_constructor import PEFTOptimWrapperConstructor

__all__ = ['PEFTOptimWrapperConstructor']
