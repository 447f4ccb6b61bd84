"""Any registered OpenMMLab or timm backbone as a PEFT host, by config.

:class:`AnyBackbone` builds the backbone its ``backbone`` config names (any
type of the mmseg, mmdet or mmpretrain registries; timm models through
mmpretrain's ``TIMMBackbone``) and turns that very module into a host: its
class becomes a subclass of the backbone's own class and
:class:`PEFTHostMixin`, so every parameter keeps its name and its forward
is the backbone's. Blocks are found by module type or name pattern, block
sites run as forward hooks, and layer aliases are name patterns; what the
backbone does not say by itself comes from a few declarative hints, with
defaults per known family (:data:`FAMILIES`).

Sites (the held attribute of the block in brackets):

* ``post_block`` (``adapter``): the block's output;
* ``block_parallel`` (``parallel_adapter``): reads the block's input (or,
  with the ``shortcut`` hint, the output of the block's shortcut module:
  the downsampling projection of a ResNet block), its output is added to
  the block's output;
* ``<b>_in`` / ``<b>_out`` (``<b>_in_adapter`` / ``<b>_out_adapter``) for
  each residual branch ``b`` of the ``branches`` hint: the input of the
  branch's module / its output, before the block's layer scale, drop path
  and residual add.
"""
import fnmatch
import functools
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from mmparax.peft import build_peft_method
from mmparax.registry import MODELS
from .host import PEFTHostMixin

#: hints per family, by the backbone's class name (``'timm:<pattern>'``:
#: ``TIMMBackbone`` with a matching ``model_name``)
FAMILIES = {
    'PoolFormer': dict(
        blocks='PoolFormerBlock',
        branches=dict(mixer='token_mixer', mlp='mlp'),
        layers=dict(fc1='network.*.*.mlp.fc1', fc2='network.*.*.mlp.fc2'),
        output_norms='norm*',
        ignore_keys=('norm.*', 'head.*'),
        no_frozen_stages=0,
        token_mixer='average pooling'),
    'ResNet': dict(
        blocks=('BasicBlock', 'Bottleneck'),
        shortcut='downsample',
        layers=dict(conv1='layer*.*.conv1', conv3='layer*.*.conv3'),
        ignore_keys=('fc.*', ),
        token_mixer='3x3 convolutions'),
    'timm:convnextv2_*': dict(
        blocks='ConvNeXtBlock',
        branches=dict(dwconv='conv_dw', mlp='mlp'),
        shortcut='shortcut',
        layers=dict(
            fc1='timm_model.stages_*.blocks.*.mlp.fc1',
            fc2='timm_model.stages_*.blocks.*.mlp.fc2'),
        ignore_keys=('head.*', ),
        token_mixer='depthwise convolutions'),
}
FAMILIES['ResNetV1c'] = FAMILIES['ResNetV1d'] = FAMILIES['ResNet']

#: the hints and what each says
HINTS = dict(
    blocks='module type name(s) or name pattern(s) of the blocks',
    stages='a regex over block names whose first group names the stage '
    '(default: the blocks under one parent module form a stage)',
    branches="{branch: name of the block's submodule computing it}",
    shortcut="name of the block's shortcut submodule (read by "
    'block_parallel when the block changes shape)',
    layers='{alias: fnmatch pattern of module names} for layer methods',
    output_norms='fnmatch pattern of the top-level modules that are new '
    'output norms (absent from pretrained checkpoints)',
    ignore_keys='fnmatch patterns of checkpoint keys to drop (a classifier)',
    no_frozen_stages='the frozen_stages value that freezes nothing',
    token_mixer='what the blocks mix tokens with (for messages)')
_TIMM_STAGE_KEY = re.compile(r'^([A-Za-z]+)\.(\d+)\.')
_HOST_CLASSES = {}


def _as_tuple(value) -> Tuple:
    if value is None:
        return ()
    return (value, ) if isinstance(value, str) else tuple(value)


def family_of(upstream: type, backbone: dict) -> Optional[str]:
    """The key of :data:`FAMILIES` for a backbone class and its config."""
    name = upstream.__name__
    if name == 'TIMMBackbone':
        model = str(backbone.get('model_name', ''))
        return next((f for f in FAMILIES if f.startswith('timm:')
                     and fnmatch.fnmatchcase(model, f[len('timm:'):])), None)
    return name if name in FAMILIES else None


def upstream_class(backbone: dict) -> type:
    """The registered class a ``backbone`` config names."""
    if not isinstance(backbone, dict) or 'type' not in backbone:
        raise TypeError('AnyBackbone: backbone must be a config dict with a '
                        "type, e.g. dict(type='mmpretrain.PoolFormer', "
                        f"arch='s12'), got {backbone!r}")
    kind = backbone['type']
    if isinstance(kind, type):
        return kind
    import mmdet.models  # noqa: F401 (registers the backbones)
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401
    cls = MODELS.get(kind)
    if cls is None:
        raise KeyError(
            f'AnyBackbone: backbone type {kind!r} is not registered; name '
            "it with its scope, e.g. 'mmpretrain.PoolFormer', "
            "'mmseg.ResNetV1c', 'mmdet.ResNet' or 'mmpretrain.TIMMBackbone'")
    return cls


class AnyBackbone(PEFTHostMixin, nn.Module):
    """Any registered backbone as a PEFT host.

    ``AnyBackbone(backbone=dict(type='mmpretrain.PoolFormer', arch='s12'))``
    returns the built backbone itself, as an instance of ``AnyPoolFormer``
    (a subclass of mmpretrain's ``PoolFormer`` and this class): the same
    parameter names, state dict and forward. Switched off (``peft=None``)
    it computes exactly what the backbone computes.

    Args:
        backbone (dict): Config of the backbone (``type`` with its scope).
        peft (dict, optional): The PEFT method. Default: None.
        with_cp (bool): Non-reentrant activation checkpointing of each
            block's own forward (with the layer updates inside; the site
            modules run outside). Default: False.
        probe_size (int): Side of the zero image one forward at build runs
            on, to find each stage's width. Default: 64.
        blocks, stages, branches, shortcut, layers, output_norms,
        ignore_keys, no_frozen_stages, token_mixer: hints (:data:`HINTS`);
            None: the family's (:data:`FAMILIES`).
        **kwargs: Further arguments of the backbone (``init_cfg``,
            ``drop_path_rate``, ``out_indices``, ...), merged into
            ``backbone``.

    Returns (forward): what the backbone returns.
    """

    def __new__(cls, backbone: Optional[dict] = None, **kwargs):
        if backbone is None:  # copy and pickle
            return super().__new__(cls)
        hints = {k: kwargs.pop(k) for k in HINTS if k in kwargs}
        for own in ('peft', 'with_cp', 'probe_size'):
            kwargs.pop(own, None)
        config = dict(backbone, **kwargs)
        try:
            module = MODELS.build(dict(config, type=upstream_class(config)))
        except TypeError as error:
            raise TypeError(
                f'AnyBackbone: building {config["type"]}: {error}. Every '
                'argument but peft, with_cp, probe_size and the hints '
                f'{sorted(HINTS)} goes to the backbone') from error
        module.__class__ = cls.host_class(config, **hints)
        return module  # __init__ follows, with the same arguments

    @classmethod
    def host_class(cls, backbone: dict, **hints) -> type:
        """The host class of a backbone config and hints (cached): a
        subclass of the backbone's class whose declarations (block sites,
        layer aliases, ...) follow the hints, e.g. for
        ``mmparax.testing.peft.fits`` before anything is built."""
        unknown = sorted(set(hints) - set(HINTS))
        if unknown:
            raise TypeError(f'AnyBackbone: unknown hint(s) {unknown}; hints '
                            f'are {sorted(HINTS)}')
        upstream = upstream_class(backbone)
        family = family_of(upstream, backbone)
        resolved = dict(FAMILIES.get(family, {}))
        resolved.update((k, v) for k, v in hints.items() if v is not None)
        if not resolved.get('blocks'):
            raise ValueError(
                f'AnyBackbone: no hints known for {upstream.__name__} '
                f'(families with defaults: {sorted(FAMILIES)}); give at '
                'least blocks=<module type name or name pattern of its '
                'blocks>, e.g. blocks=\'PoolFormerBlock\'')
        key = (upstream, repr(sorted(resolved.items())))
        if key not in _HOST_CLASSES:
            sites = OrderedDict(post_block='adapter',
                                block_parallel='parallel_adapter')
            for branch in resolved.get('branches') or {}:
                sites[f'{branch}_in'] = f'{branch}_in_adapter'
                sites[f'{branch}_out'] = f'{branch}_out_adapter'
            _HOST_CLASSES[key] = type(
                f'Any{upstream.__name__}', (AnyBackbone, upstream),
                dict(__module__=__name__,
                     upstream=upstream,
                     family=family,
                     hints=resolved,
                     block_sites=dict(sites),
                     layer_aliases=dict(resolved.get('layers') or {}),
                     token_mixer=resolved.get('token_mixer', ''),
                     no_frozen_stages=resolved.get('no_frozen_stages', -1)))
        return _HOST_CLASSES[key]

    def __init__(self,
                 backbone: dict,
                 peft: Optional[dict] = None,
                 with_cp: bool = False,
                 probe_size: int = 64,
                 **kwargs):
        # the backbone is built (__new__); only the host's part is left
        self.with_cp = with_cp
        self._stages = self._find_stages(probe_size)
        self._shortcut_out = {}
        for _, blocks in self._stages:
            for block in blocks:
                self._hook_block(block)
        self.init_peft(peft)

    # -- blocks and stages ---------------------------------------------------
    def _is_block(self, name: str, module: nn.Module) -> bool:
        for hint in _as_tuple(self.hints['blocks']):
            if any(c in hint for c in '.*?['):
                if fnmatch.fnmatchcase(name, hint):
                    return True
            elif type(module).__name__ == hint:
                return True
        return False

    def _find_stages(self, probe_size: int):
        blocks = OrderedDict()
        for name, module in self.named_modules():
            if name and self._is_block(name, module) and not any(
                    name.startswith(b + '.') for b in blocks):
                blocks[name] = module
        if not blocks:
            raise ValueError(
                f'{type(self).__name__}: blocks={self.hints["blocks"]!r} '
                'matches no module; give the hint blocks=<module type name or '
                'name pattern of the blocks>')
        stage_regex = self.hints.get('stages')
        groups = OrderedDict()
        for name, block in blocks.items():
            if stage_regex:
                match = re.search(stage_regex, name)
                if match is None:
                    raise ValueError(
                        f'{type(self).__name__}: stages={stage_regex!r} does '
                        f'not match the block {name}')
                key = match.group(1)
            else:
                key = name.rpartition('.')[0]
            groups.setdefault(key, []).append(block)
        shapes = self._probe(list(blocks.values()), probe_size)
        stages = []
        for key, members in groups.items():
            widths = {shapes[b][1][1] for b in members}
            if len(widths) != 1:
                raise ValueError(
                    f'{type(self).__name__}: the blocks of stage {key!r} give '
                    f'{sorted(widths)} channels; give the stages hint so that '
                    'each stage holds blocks of one width')
            stages.append((widths.pop(), members))
        return stages

    @torch.no_grad()
    def _probe(self, blocks: List[nn.Module], size: int) -> Dict:
        """``{block: (input shape, output shape)}`` of one forward on zeros
        [1, 3, size, size] in eval mode (norm statistics untouched)."""
        shapes, handles = {}, []

        def record(block, args, output):
            if not (isinstance(output, torch.Tensor) and output.dim() == 4):
                raise ValueError(
                    f'{type(self).__name__}: a block returns '
                    f'{type(output).__name__} '
                    f'{getattr(output, "shape", "")}; the generic host needs '
                    'blocks that map [B, C, H, W] maps')
            shapes[block] = (tuple(args[0].shape), tuple(output.shape))

        for block in blocks:
            handles.append(block.register_forward_hook(record))
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            self.forward(next(self.parameters()).new_zeros(1, 3, size, size))
        finally:
            for handle in handles:
                handle.remove()
            for m, mode in modes.items():
                m.training = mode
        return shapes

    def peft_stages(self):
        return [(width, list(blocks)) for width, blocks in self._stages]

    # -- sites -----------------------------------------------------------
    def _hook_block(self, block: nn.Module) -> None:
        block.register_forward_hook(self._block_hook)
        shortcut = self.hints.get('shortcut')
        module = getattr(block, shortcut, None) if shortcut else None
        if isinstance(module, nn.Module):
            module.register_forward_hook(
                functools.partial(self._shortcut_hook, block))
        for branch, attr in (self.hints.get('branches') or {}).items():
            module = getattr(block, attr, None)
            if not isinstance(module, nn.Module):
                raise ValueError(
                    f'{type(self).__name__}: branches={{{branch!r}: '
                    f'{attr!r}}} but a block has no submodule {attr!r}; its '
                    f'children are {list(block._modules)}')
            module.register_forward_pre_hook(
                functools.partial(self._branch_in_hook, block, branch))
            module.register_forward_hook(
                functools.partial(self._branch_out_hook, block, branch))
        if self.with_cp:
            block.forward = functools.partial(
                self._checkpointed, type(block).forward.__get__(block))

    @staticmethod
    def _checkpointed(forward, *args, **kwargs):
        if torch.is_grad_enabled():
            return cp.checkpoint(forward, *args, use_reentrant=False,
                                 **kwargs)
        return forward(*args, **kwargs)

    def _shortcut_hook(self, block, module, args, output):
        if self.has_site(block, 'block_parallel'):
            self._shortcut_out[block] = output

    def _block_hook(self, block, args, output):
        if self.has_site(block, 'block_parallel'):
            x = self._shortcut_out.pop(block, args[0])
            if x.shape != output.shape:
                raise ValueError(
                    f'{type(self).__name__}: block_parallel reads the block '
                    f'input {tuple(x.shape)} but the block returns '
                    f'{tuple(output.shape)}; give the hint shortcut=<name '
                    "of the block's shortcut (downsampling) submodule>")
            output = output + self.site_map(block, 'block_parallel', x)
        return self.site_map(block, 'post_block', output)

    def _branch_in_hook(self, block, branch, module, args):
        if not self.has_site(block, f'{branch}_in'):
            return None
        return (self.site_map(block, f'{branch}_in', args[0]), ) + args[1:]

    def _branch_out_hook(self, block, branch, module, args, output):
        return self.site_map(block, f'{branch}_out', output)

    # -- new layers and checkpoints ------------------------------------------
    def new_module_names(self) -> List[str]:
        pattern = self.hints.get('output_norms')
        if not pattern:
            return []
        return [name for name in self._modules
                if fnmatch.fnmatchcase(name, pattern)]

    def ignored_checkpoint_keys(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p)
                   for p in _as_tuple(self.hints.get('ignore_keys')))

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        """A timm checkpoint (``stages.0.blocks...``) gets the names of
        ``TIMMBackbone(features_only=True)`` (``timm_model.stages_0...``)."""
        if self.upstream.__name__ != 'TIMMBackbone' or any(
                k.startswith('timm_model.') for k in state_dict):
            return state_dict
        own = set(self.state_dict())
        out = OrderedDict()
        for key, value in state_dict.items():
            flat = 'timm_model.' + _TIMM_STAGE_KEY.sub(r'\1_\2.', key, 1)
            nested = 'timm_model.' + key
            # keys of neither form (the classifier) stay as they are
            out[flat if flat in own else nested if nested in own
                else key] = value
        return out

    # -- methods ---------------------------------------------------------
    def init_peft(self, peft) -> None:
        """:meth:`PEFTHostMixin.init_peft`; a method that needs what the
        hints do not give fails naming the hint to add."""
        method = build_peft_method(peft)
        if method is not None and method.missing(self):
            try:
                method.check_host(self)
            except ValueError as error:
                raise ValueError(
                    f'{error}. {self._advice(method)}') from None
        super().init_peft(method)

    def _advice(self, method) -> str:
        advice = []
        for site in method._wanted_sites(self):
            if site in self.block_sites:
                continue
            branch, _, end = site.rpartition('_')
            if end in ('in', 'out') and branch:
                advice.append(
                    f'for {site}, add the hint branches=dict({branch}='
                    "'<name of the block submodule computing that "
                    "branch>')")
            else:
                advice.append(
                    f'{site} needs code inside the block (write a host, see '
                    "the README's host checklist) or choose sites= among "
                    f'{tuple(self.block_sites)}')
        choices = [method.targets] if method.targets is not None \
            else list(method.default_targets)
        if choices and not any(
                all(t.split(':')[0] in self.layer_aliases for t in choice)
                for choice in choices):
            aliases = ' or '.join(
                str([t.split(':')[0] for t in c]) for c in choices)
            advice.append(
                f"for the layers of {method.name}, add the hint layers=dict("
                "<alias>='<fnmatch pattern of module names>', ...) naming "
                f'{aliases}')
        for capability in method.requires:
            if capability not in self.capabilities:
                advice.append(f'the capability {capability!r} needs a '
                              'hand-written host')
        hints = ', '.join(f'{k}={v!r}' for k, v in self.hints.items())
        return (f'AnyBackbone hints ({self.family or "no family"}: {hints}): '
                + '; '.join(advice))


MODELS.register_module(module=AnyBackbone)
