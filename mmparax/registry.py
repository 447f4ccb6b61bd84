"""Registries of the ``mmparax`` scope.

Children of mmengine's root registries, so configs running under the
``mmseg`` or ``mmdet`` default scope reach them with the scope prefix, e.g.
``dict(type='mmparax.ParaXSwin')`` or ``dict(type='mmparax.PEFTCheckHook')``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import (
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
)
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmparax',
    locations=['mmparax.models'])
DATASETS = Registry(
    'dataset',
    parent=MMENGINE_DATASETS,
    scope='mmparax',
    locations=['mmparax.datasets'])
METRICS = Registry(
    'metric',
    parent=MMENGINE_METRICS,
    scope='mmparax',
    locations=['mmparax.datasets'])
HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='mmparax',
    locations=['mmparax.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='mmparax',
    locations=['mmparax.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper',
    parent=MMENGINE_OPTIM_WRAPPERS,
    scope='mmparax',
    locations=['mmparax.engine'])
PEFT_METHODS = Registry(
    'peft method', scope='mmparax', locations=['mmparax.peft'])
