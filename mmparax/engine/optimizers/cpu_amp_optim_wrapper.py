"""fp16 mixed precision on a machine without CUDA.

mmengine's ``AmpOptimWrapper`` refuses the CPU (its loss scaler is
``torch.cuda.amp.GradScaler`` and its autocast allows only bfloat16 on the
CPU). :class:`CPUAmpOptimWrapper` is the same wrapper with
``torch.amp.GradScaler('cpu')`` and ``torch.autocast('cpu', float16)``, so
the recipes' fp16 path (autocast, dynamic loss scale, skipped inf / nan
steps, the scaler state in checkpoints) runs and is tested on the CPU.
:func:`mmparax.apis.runtime.check_optim_wrapper` puts it in place of
``AmpOptimWrapper`` when there is no CUDA device.
"""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmparax.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` on the CPU: float16 autocast, CPU ``GradScaler``.

    Args:
        loss_scale (float | str | dict): ``'dynamic'``, a static scale, or
            ``GradScaler`` arguments, as ``AmpOptimWrapper``.
        dtype (str | torch.dtype, optional): Autocast dtype; None means
            float16 (the CUDA default), not mmengine's CPU bfloat16.
        use_fsdp (bool): Not supported (FSDP needs CUDA).
        **kwargs: ``OptimWrapper`` arguments.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None,
                 use_fsdp: bool = False,
                 **kwargs):
        if use_fsdp:
            raise ValueError(
                'CPUAmpOptimWrapper: use_fsdp=True needs CUDA; remove '
                'optim_wrapper.use_fsdp to train on the CPU.')
        # AmpOptimWrapper.__init__ asserts a GPU: skip to OptimWrapper's
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler(
                'cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError('optim_wrapper.loss_scale must be a float, a '
                            f"dict or 'dynamic', got {loss_scale!r}")
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'optim_wrapper.dtype must be one of '
                                 f'{self.valid_dtypes}, got {dtype!r}')
            dtype = getattr(torch, dtype)
        self.cast_dtype = torch.float16 if dtype is None else dtype
        print_log(
            'CPUAmpOptimWrapper: no CUDA device, the CPU stand-in of '
            f'AmpOptimWrapper trains in {self.cast_dtype} autocast with '
            f'a CPU GradScaler (loss_scale={loss_scale!r}).',
            logger='current')

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context, then CPU autocast."""
        with OptimWrapper.optim_context(self, model), torch.autocast(
                'cpu', dtype=self.cast_dtype):
            yield
