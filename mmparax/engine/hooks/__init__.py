from .peft_check_hook import PEFTCheckHook

__all__ = ['PEFTCheckHook']
