"""The backbone names of the first release, kept for existing configs.

``type='mmparax.ParaXSwin', parax=dict(...)`` is the same model as
``type='mmparax.Swin', peft=dict(type='ParaX', ...)``; likewise ConvNeXt,
VMamba and ViT.
"""
from typing import Optional

from mmparax.registry import MODELS
from .convnext import ConvNeXt
from .swin import Swin
from .vit import ViT
from .vmamba import VMamba


def _parax(name: str, parax: Optional[dict], kwargs: dict,
           defaults: Optional[dict] = None) -> dict:
    if 'peft' in kwargs:
        raise ValueError(f'{name} takes parax=dict(...), not peft; for '
                         'another method use the host backbone with '
                         'peft=dict(...)')
    return dict(type='ParaX', **dict(defaults or {}, **(parax or {})))


@MODELS.register_module()
class ParaXSwin(Swin):
    """:class:`Swin` with ParaX: ``ParaXSwin(parax=dict(...))``."""

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(peft=_parax('ParaXSwin', parax, kwargs), **kwargs)


@MODELS.register_module()
class ParaXConvNeXt(ConvNeXt):
    """:class:`ConvNeXt` with ParaX: ``ParaXConvNeXt(parax=dict(...))``.

    As in the first release, the adapters' Linear/Conv layers start from a
    truncated normal (``layer_init='trunc_normal'``) unless ``parax`` says
    otherwise.
    """

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(
            peft=_parax('ParaXConvNeXt', parax, kwargs,
                        dict(layer_init='trunc_normal')),
            **kwargs)


@MODELS.register_module()
class ParaXVMamba(VMamba):
    """:class:`VMamba` with ParaX: ``ParaXVMamba(parax=dict(...))``."""

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(peft=_parax('ParaXVMamba', parax, kwargs), **kwargs)


@MODELS.register_module()
class ParaXViT(ViT):
    """:class:`ViT` with ParaX: ``ParaXViT(parax=dict(...))``."""

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(peft=_parax('ParaXViT', parax, kwargs), **kwargs)
