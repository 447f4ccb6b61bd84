"""A hook for the distributed test: every rank saves its parameters and
buffers."""
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankParamsHook(Hook):
    """Save ``{name: tensor}`` of all parameters and buffers (the state
    dict) to ``work_dir/rank<r>_params.pth`` after training."""

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        params = {
            name: value.detach().cpu().clone()
            for name, value in model.state_dict().items()
        }
        torch.save(params,
                   osp.join(runner.work_dir, f'rank{runner.rank}_params.pth'))
