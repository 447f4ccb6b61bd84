"""What every PEFT method shares.

A method is a registered :class:`PEFTMethod` built from a config dict
(``peft=dict(type='ParaX', rank=128)``). A host backbone
(:class:`mmparax.models.PEFTHostMixin`) hands itself to :meth:`attach`; the
method puts its :class:`PEFTModule` instances where the host says it may:

* block sites of the residual stream (``host.block_sites``): the host calls
  the module there as ``module(tokens [B, H*W, C], (H, W)) -> [B, H*W, C]``;
* frozen layers by alias (``host.layer_aliases``): the method attaches an
  update as a child of the frozen layer, which keeps its name;
* shared state (ParaX's expert centers): registered on the host under a name
  the method chooses.

The host then freezes every parameter it had before :meth:`attach` and
trains everything the method added.
"""
import math
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import torch
import torch.nn as nn

from mmparax.registry import PEFT_METHODS

#: sites whose module returns a delta that the host adds to the block output
PARALLEL_SITES = ('mlp_parallel', 'block_parallel')
#: the thirds of a fused qkv layer's outputs
FUSED_PARTS = dict(q=0, k=1, v=2)


# -- argument checks --------------------------------------------------------
# check_number ... check_choice raise
# ValueError('<method>: <name> must be <what><hint>, got <value>')
def is_number(value) -> bool:
    """Whether ``value`` is an int or a float (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive_int(value) -> bool:
    """Whether ``value`` is an int above 0 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) \
        and value > 0


def _fail(method: str, name: str, what: str, value, hint: str = ''):
    raise ValueError(f'{method}: {name} must be {what}{hint}, got {value!r}')


def check_number(method: str, name: str, value, hint: str = '') -> None:
    """Raise unless ``value`` is a number."""
    if not is_number(value):
        _fail(method, name, 'a number', value, hint)


def check_positive(method: str, name: str, value, hint: str = '') -> None:
    """Raise unless ``value`` is a number above 0."""
    if not is_number(value) or not value > 0:
        _fail(method, name, 'a positive number', value, hint)


def check_positive_int(method: str, name: str, value, hint: str = '') -> None:
    """Raise unless ``value`` is an integer above 0."""
    if not is_positive_int(value):
        _fail(method, name, 'a positive integer', value, hint)


def check_fraction(method: str,
                   name: str,
                   value,
                   closed: bool = False,
                   hint: str = '') -> None:
    """Raise unless ``value`` is a number in [0, 1) ([0, 1] if
    ``closed``)."""
    if not is_number(value) or not (0 <= value <= 1 if closed else
                                    0 <= value < 1):
        _fail(method, name, f'a number in [0, 1{"]" if closed else ")"}',
              value, hint)


def check_choice(method: str, name: str, value, choices) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in tuple(choices):
        _fail(method, name, f'one of {tuple(choices)}', value)


def check_bool(method: str, name: str, value) -> None:
    """Raise TypeError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise TypeError(
            f'{method}: {name} must be True or False, got {value!r}')


def per_stage(method: str, name: str, value, stage: int):
    """The value of ``stage``: ``value`` itself, or ``value[stage]`` when it
    is a list or tuple (one value per stage)."""
    if not isinstance(value, (list, tuple)):
        return value
    if stage >= len(value):
        raise ValueError(f'{method}: {name}={value!r} gives no value for '
                         f'stage {stage}; give one value per stage')
    return value[stage]


def check_names(method: str, name: str, value,
                what: str) -> Optional[Tuple[str, ...]]:
    """``value`` as a tuple (None stays None); raises TypeError unless it is
    a list of strings (``what`` says of which)."""
    if value is not None and (isinstance(value, str) or not all(
            isinstance(v, str) for v in value)):
        raise TypeError(
            f'{method}: {name} must be a list of {what}, got {value!r}')
    return None if value is None else tuple(value)


class PEFTModule(nn.Module):
    """Base of every module a PEFT method adds to a backbone.

    ``peft_component`` names the group its parameters are reported under
    (``'adapters'``, ``'expert_centers'``, ...). A module that wraps a frozen
    layer must not own that layer: its parameters are the method's only.
    """

    peft_component = 'adapters'

    def reset_parameters(self):
        """Re-initialise the module as at construction."""
        raise NotImplementedError

    def switch_off(self) -> None:
        """Make the module a no-op in place (the host then computes what
        the plain host computes), for tests; modules that hold no state of
        their own to zero (e.g. shared pools) leave this as is."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot be switched off')


class LowRankInit:
    """Mixin of a :class:`PEFTModule` with factors ``A`` and ``B`` whose
    output goes through ``B``: ``A`` starts from Kaiming-uniform
    (a = sqrt(5)) and ``B`` from zero, so the module starts as a no-op;
    switching it off zeroes ``B``."""

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.zeros_(self.B)

    @torch.no_grad()
    def switch_off(self):
        self.B.zero_()


class LinearUpdate(PEFTModule):
    """Base of an update of a frozen linear layer: the layer's child, added
    to its output by a forward hook until :meth:`merge_into` folds it into
    the weight. Subclasses implement :meth:`delta` and :meth:`merge_into`.
    """

    def delta(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """[..., in] (channels last) -> [..., total]: the update, zero
        outside the outputs it covers."""
        raise NotImplementedError

    def hook_into(self, layer: nn.Module, name: str) -> None:
        """Become the child ``name`` of ``layer`` and add the update to its
        output."""
        layer.add_module(name, self)
        layer.register_forward_hook(self.hook)

    def hook(self, layer: nn.Module, args, output: torch.Tensor):
        """Forward hook of the frozen layer: adds the update."""
        x = args[0]
        if getattr(layer, 'channels_first', False):  # [B, C, H, W] maps
            d = self.delta(x.permute(0, 2, 3, 1), output.shape[1])
            return output + d.permute(0, 3, 1, 2)
        return output + self.delta(x, output.shape[-1])

    def unhook(self, layer: nn.Module) -> None:
        """Stop adding the update to the output of ``layer``."""
        for key, hook in list(layer._forward_hooks.items()):
            if getattr(hook, '__self__', None) is self:
                del layer._forward_hooks[key]

    def merge_into(self, layer: nn.Module) -> None:
        """Add the update to ``layer.weight`` and :meth:`unhook`."""
        raise NotImplementedError

    @classmethod
    def merge_all(cls, host: nn.Module) -> None:
        """Fold every ``cls`` module of ``host`` into its frozen layer (its
        parent)."""
        for name, module in list(host.named_modules()):
            if isinstance(module, cls):
                module.merge_into(host.get_submodule(name.rpartition('.')[0]))


class PEFTMethod:
    """Base of the registered PEFT methods.

    Subclasses implement :meth:`attach` and may override :meth:`site_forward`
    (how the module at a block site is called) and :meth:`merge`. Methods
    on frozen linear layers set :attr:`targets` and :attr:`default_targets`
    and attach through :meth:`linear_targets`.

    Args:
        sites (Sequence[str], optional): Block sites to fill. None: the
            method's :attr:`default_sites` (``'residual'`` stands for every
            site after a residual add, ``host.residual_sites``).
    """

    #: what ``sites=None`` means: site names ('residual' expands to
    #: host.residual_sites), or a tuple of such tuples, one per kind of
    #: host, of which the first the host offers entirely is taken
    default_sites: Sequence = ()
    #: layer targets (see :meth:`linear_targets`); None: the first of
    #: :attr:`default_targets` (tuples of targets) whose aliases the host
    #: names
    targets: Optional[Tuple[str, ...]] = None
    default_targets: Sequence[Tuple[str, ...]] = ()
    #: whether the host's new output layers (the per-output norms of a
    #: dense-prediction backbone, absent from ImageNet checkpoints) train
    #: with the method, as its official dense-prediction code has it (see
    #: :meth:`trains_output_norms`); frozen, they keep their initial values
    output_norms_trained = False
    #: the ``train_output_norms`` setting of the config (None: the default)
    train_output_norms: Optional[bool] = None
    #: whether the block-site modules see a ViT's class token (and act on it
    #: as on every token), as the method's official ViT code; False: patch
    #: tokens only, the class token bypasses them (needed by modules that
    #: see the tokens as an H x W map)
    adapts_class_token = False

    def __init__(self, sites: Optional[Sequence[str]] = None):
        self.sites = check_names(self.name, 'sites', sites,
                                 'site names such as ["post_attn"]')

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- what a host offers -------------------------------------------------
    def resolve_sites(self, host) -> List[str]:
        """The block sites of ``host`` this method fills; raises naming the
        method, the host and what it offers when one is missing."""
        wanted = self.sites
        if wanted is None:
            wanted = self.default_sites
            if wanted and not isinstance(wanted[0], str):
                wanted = next((choice for choice in wanted
                               if all(s in host.block_sites
                                      or s == 'residual' for s in choice)),
                              wanted[0])
        resolved = []
        for site in wanted:
            resolved += list(host.residual_sites) if site == 'residual' \
                else [site]
        offered = tuple(host.block_sites)
        missing = [s for s in resolved if s not in offered]
        if missing or not resolved:
            what = f'site(s) {missing}' if missing else 'any block site'
            raise ValueError(
                f'{self.name} needs {what} that {type(host).__name__} does '
                f'not offer; it offers {offered} (residual sites: '
                f'{tuple(host.residual_sites)})')
        return resolved

    def resolve_layers(self, host, alias: str) -> Dict[str, nn.Module]:
        """``{name: layer}`` of the frozen layers ``alias`` names in
        ``host``; raises when the alias is unknown or matches nothing."""
        if alias not in host.layer_aliases:
            raise ValueError(
                f'{self.name} targets layers {alias!r}, which '
                f'{type(host).__name__} does not name; it offers '
                f'{tuple(host.layer_aliases)}')
        layers = host.named_layers(alias)
        if not layers:
            raise ValueError(
                f'{self.name}: the layer alias {alias!r} of '
                f'{type(host).__name__} ({host.layer_aliases[alias]!r}) '
                'matches no layer')
        return layers

    def check_targets(self, targets) -> Optional[Tuple[str, ...]]:
        """The ``targets`` argument (see :meth:`linear_targets`) as a tuple,
        or None; raises TypeError unless it is a list of strings."""
        return check_names(self.name, 'targets', targets,
                           "layer aliases such as ['fc1', 'fc2']")

    def resolve_targets(self, host) -> Tuple[str, ...]:
        """:attr:`targets`, or the first of :attr:`default_targets` whose
        aliases ``host`` names; raises when there is none."""
        if self.targets is not None:
            return self.targets
        for choice in self.default_targets:
            if all(t.split(':')[0] in host.layer_aliases for t in choice):
                return choice
        raise ValueError(
            f'{self.name} has no default placement on {type(host).__name__} '
            f'(layer aliases {tuple(host.layer_aliases)}); give targets')

    def linear_targets(self, host) -> Iterator[Tuple]:
        """``(name, layer, alias, parts)`` of every frozen layer that
        :meth:`resolve_targets` names.

        A target is a layer alias, or ``'alias:parts'`` on a fused qkv
        layer: ``'qkv:qv'`` names its q and v thirds, and ``parts`` is then
        ``[(part, first output, outputs)]`` (else None). Raises naming the
        method, the target and the layer when a layer is not linear (a 2-D
        weight) or the parts are not distinct thirds.
        """
        for target in self.resolve_targets(host):
            alias, _, spec = target.partition(':')
            for name, layer in self.resolve_layers(host, alias).items():
                weight = getattr(layer, 'weight', None)
                if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
                    raise ValueError(f'{self.name}: {name} ({alias}) is not a '
                                     'linear layer')
                parts, outputs = None, weight.shape[0]
                if spec:
                    if set(spec) - set(FUSED_PARTS) or outputs % 3 or len(
                            set(spec)) != len(spec):
                        raise ValueError(
                            f'{self.name} target {target!r}: parts name '
                            "distinct thirds of a fused qkv layer ('q', 'k', "
                            f"'v'); got {spec!r} for {name} with {outputs} "
                            'outputs')
                    width = outputs // 3
                    parts = [(p, FUSED_PARTS[p] * width, width) for p in spec]
                yield name, layer, alias, parts

    def trains_output_norms(self, host) -> bool:
        """Whether ``host``'s new output layers train: the config's
        ``train_output_norms``, else :attr:`output_norms_trained`."""
        if self.train_output_norms is not None:
            return self.train_output_norms
        return self.output_norms_trained

    # -- what a method does -------------------------------------------------
    def attach(self, host) -> None:
        """Build the method's modules and register them on ``host``."""
        raise NotImplementedError

    def add_site_modules(self,
                         host,
                         build: Callable[[int, str, int], nn.Module],
                         sites: Optional[Sequence[str]] = None) -> None:
        """Put ``build(channels, site, stage index)`` at every site of every
        block of ``host``.

        Args:
            host (nn.Module): The host backbone.
            build (Callable): Builds one module; called once per block and
                site.
            sites (Sequence[str], optional): Block sites; None:
                :meth:`resolve_sites`.
        """
        sites = self.resolve_sites(host) if sites is None else sites
        for i, (channels, blocks) in enumerate(host.peft_stages()):
            for j in range(len(blocks)):
                for site in sites:
                    host.add_site_module(i, j, site, build(channels, site, i))

    def site_forward(self, host, module: nn.Module, x, hw_shape):
        """Run the module at a block site: tokens [B, H*W, C] -> same."""
        return module(x, hw_shape)

    def merge(self, host) -> None:
        """Fold the method into the frozen weights, where it can."""
        raise NotImplementedError(
            f'{self.name} cannot be merged into the frozen weights')

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items())
        return f'{self.name}({args})'


def build_peft_method(cfg) -> Optional[PEFTMethod]:
    """A :class:`PEFTMethod` from a config dict (or an instance, or None)."""
    if cfg is None or isinstance(cfg, PEFTMethod):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError('peft must be a dict with a type, e.g. '
                        f"dict(type='ParaX', rank=128), got {cfg!r}")
    cfg = dict(cfg)
    name = cfg.pop('type')
    train_output_norms = cfg.pop('train_output_norms', None)
    if not (train_output_norms is None
            or isinstance(train_output_norms, bool)):
        raise TypeError(
            f'peft {name!r}: train_output_norms must be True, False or None '
            "(the method's default, from its official code), got "
            f'{train_output_norms!r}')
    if isinstance(name, str):
        name = name.split('.')[-1]  # 'mmparax.ParaX' works too
        cls = PEFT_METHODS.get(name)
        if cls is None:
            raise KeyError(f'unknown PEFT method {name!r}; registered: '
                           f'{sorted(PEFT_METHODS.module_dict)}')
    else:
        cls = name
    try:
        method = cls(**cfg)
    except TypeError as error:
        message = str(error)  # name the method once
        if not message.startswith(f'{cls.__name__}: '):
            message = f'{cls.__name__}: {message}'
        raise TypeError(message) from error
    method.train_output_norms = train_output_norms
    return method
