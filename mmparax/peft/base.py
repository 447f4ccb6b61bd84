"""What every PEFT method shares.

A method is a registered :class:`PEFTMethod` built from a config dict
(``peft=dict(type='ParaX', hidden_dim=128)``). A host backbone
(:class:`mmparax.models.PEFTHostMixin`) hands itself to :meth:`attach`; the
method puts its :class:`PEFTModule` instances where the host says it may:

* block sites of the residual stream (``host.block_sites``): the host calls
  the module there as ``module(tokens [B, H*W, C], (H, W)) -> [B, H*W, C]``;
* frozen layers by alias (``host.layer_aliases``): the method attaches an
  update (:class:`LayerUpdate`) as a child of the frozen layer, which keeps
  its name;
* shared state (ParaX's expert centers): registered on the host under a name
  the method chooses.

A method declares what it needs (:attr:`PEFTMethod.default_sites`,
:attr:`PEFTMethod.default_targets`, :attr:`PEFTMethod.requires`: host
capabilities from :data:`HOST_CAPABILITIES`); :meth:`PEFTMethod.check_host`
compares that with what the host declares before anything is attached.

The host then freezes every parameter it had before :meth:`attach` and
trains everything the method added. ``method.merge(host)`` folds the method
into the frozen weights, ``unmerge(host)`` undoes it exactly and
``unload(host)`` removes the method, leaving the plain host.
"""
import math
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmparax.registry import PEFT_METHODS

#: sites whose module returns a delta that the host adds to the block output
PARALLEL_SITES = ('mlp_parallel', 'block_parallel')
#: the thirds of a fused qkv layer's outputs
FUSED_PARTS = dict(q=0, k=1, v=2)
#: what a host may offer beyond its sites and layers (its ``capabilities``)
#: and a method may require (``PEFTMethod.requires``)
HOST_CAPABILITIES = dict(
    window_attention='self-attention within local windows; the tokens of '
    'the attn_tokens site join every window',
    depthwise_pointwise_blocks='blocks of a depthwise conv followed by two '
    'channel-last pointwise linears, layer aliases dwconv, fc1 and fc2 of '
    'one block')


def residual_sites(block_sites) -> Tuple[str, ...]:
    """The sites of ``block_sites`` right after a residual add
    (``post_*``)."""
    return tuple(s for s in block_sites if s.startswith('post_'))


def _class_name(host) -> str:
    return host.__name__ if isinstance(host, type) else type(host).__name__


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


class LayerUpdate(PEFTModule):
    """Base of an update of frozen layers: a child of the layer it updates
    (which keeps its name), acting through hooks it registers with
    :meth:`add_hook` and keeps (:meth:`detach` removes them).

    :attr:`merged` says whether the update is folded into the frozen
    weights (:meth:`merge_into`, undone by :meth:`unmerge_from`); while
    merged its hooks are removed. Updates that cannot be folded keep
    :attr:`mergeable` False.
    """

    mergeable = False

    def __init__(self):
        super().__init__()
        self.merged = False
        self._handles = []

    def add_hook(self, module: nn.Module, hook: Callable,
                 pre: bool = False) -> None:
        """Register ``hook`` as a forward (``pre``: forward pre) hook of
        ``module`` and keep its handle."""
        register = module.register_forward_pre_hook if pre \
            else module.register_forward_hook
        self._handles.append(register(hook))

    def hook_into(self, layer: nn.Module, name: str) -> None:
        """Become the child ``name`` of ``layer`` and run :meth:`hook` after
        it."""
        layer.add_module(name, self)
        self.add_hook(layer, self.hook)

    def hook(self, layer: nn.Module, args, output: torch.Tensor):
        """Forward hook of the frozen layer: the updated output."""
        raise NotImplementedError

    def detach(self) -> None:
        """Remove every hook the update registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def merge_into(self, layer: nn.Module) -> None:
        """Fold the update into ``layer``'s weights and :meth:`detach`."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot be folded into the frozen '
            'weights')

    def unmerge_from(self, layer: nn.Module) -> None:
        """Restore ``layer``'s weights and hook it again."""
        raise NotImplementedError


class LinearUpdate(LayerUpdate):
    """Base of an update of a frozen linear layer on one or more equal
    slices of its outputs (the thirds of a fused qkv layer), added to its
    output by a forward hook until :meth:`merge_into` folds it into the
    weight. Subclasses implement :meth:`project` and :meth:`weight_slices`.

    Args:
        out_features (int): Outputs of each slice.
        starts (Sequence[int]): First output of each slice. Default: (0,).
    """

    mergeable = True

    def __init__(self, out_features: int, starts: Sequence[int] = (0, )):
        super().__init__()
        self.out_features, self.starts = out_features, tuple(sorted(starts))
        self.channels_first = False

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., P, out]: the update of each slice."""
        raise NotImplementedError

    def weight_slices(self) -> torch.Tensor:
        """[P, out, in]: the update of each slice's rows of the weight."""
        raise NotImplementedError

    def delta(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """[..., in] (channels last) -> [..., total]: the update, zero
        outside its slices."""
        y = self.project(x)  # [..., P, out]
        pieces, cursor = [], 0
        for i, start in enumerate(self.starts):
            if start > cursor:
                pieces.append(y.new_zeros(*y.shape[:-2], start - cursor))
            pieces.append(y[..., i, :])
            cursor = start + self.out_features
        if cursor < total:
            pieces.append(y.new_zeros(*y.shape[:-2], total - cursor))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)

    def hook_into(self, layer: nn.Module, name: str,
                  channels_first: bool = False) -> None:
        """Become the child ``name`` of ``layer`` and add the update to its
        output; ``channels_first``: the layer maps [B, C, H, W] maps (see
        ``PEFTMethod.linear_targets``)."""
        self.channels_first = channels_first
        super().hook_into(layer, name)

    def hook(self, layer: nn.Module, args, output: torch.Tensor):
        """Forward hook of the frozen layer: adds the update."""
        x = args[0]
        if self.channels_first:
            d = self.delta(x.permute(0, 2, 3, 1), output.shape[1])
            return output + d.permute(0, 3, 1, 2)
        return output + self.delta(x, output.shape[-1])

    @torch.no_grad()
    def merge_into(self, layer: nn.Module) -> None:
        """Add the update to the rows of ``layer.weight`` it covers (their
        values before are kept, for :meth:`unmerge_from`) and
        :meth:`detach`."""
        if self.merged:
            raise ValueError(f'{type(self).__name__} is merged already')
        weight, kept = layer.weight, []
        for rows, start in zip(self.weight_slices(), self.starts):
            part = weight[start:start + self.out_features]
            kept.append(part.clone())
            part += rows.to(weight.dtype)
        self.register_buffer('unmerged_rows', torch.stack(kept),
                             persistent=False)
        self.detach()
        self.merged = True

    @torch.no_grad()
    def unmerge_from(self, layer: nn.Module) -> None:
        """Put back the rows of ``layer.weight`` as they were before
        :meth:`merge_into` (bit for bit) and hook ``layer`` again."""
        if not self.merged:
            raise ValueError(f'{type(self).__name__} is not merged')
        for rows, start in zip(self.unmerged_rows, self.starts):
            layer.weight[start:start + self.out_features] = rows
        del self.unmerged_rows
        self.add_hook(layer, self.hook)
        self.merged = False


class PEFTMethod:
    """Base of the registered PEFT methods.

    Subclasses declare what they need of a host (:attr:`default_sites`,
    :attr:`default_targets`, :attr:`requires`), implement :meth:`attach`
    and may override :meth:`site_forward` (how the module at a block site is
    called). Methods on frozen linear layers attach through
    :meth:`linear_targets`. The host calls :meth:`check_host` before
    :meth:`attach`. :meth:`merge`, :meth:`unmerge` and :meth:`unload` work
    on :class:`LayerUpdate` modules as they are; methods that fold otherwise
    (RepAdapter) override the first two and :meth:`is_merged`.

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
    #: host capabilities (:data:`HOST_CAPABILITIES`) the method needs
    requires: Tuple[str, ...] = ()
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
    def _wanted_sites(self, host) -> List[str]:
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
            resolved += list(residual_sites(host.block_sites)) \
                if site == 'residual' else [site]
        return resolved

    def missing(self, host) -> List[str]:
        """What ``host`` (a host or its class) lacks of what the method
        needs (sites, layer aliases, capabilities), one clause each; empty
        when the method fits."""
        name, clauses = _class_name(host), []
        sites = [s for s in self._wanted_sites(host)
                 if s not in host.block_sites]
        if sites:
            clauses.append(f'{self.name} needs site(s) {sites} that {name} '
                           'does not offer')
        aliases = host.layer_aliases
        if self.targets is not None:
            for alias in dict.fromkeys(t.split(':')[0] for t in self.targets):
                if alias not in aliases:
                    clauses.append(f'{self.name} targets layers {alias!r}, '
                                   f'which {name} does not name')
        elif self.default_targets and not any(
                all(t.split(':')[0] in aliases for t in choice)
                for choice in self.default_targets):
            choices = ' or '.join(str(list(c)) for c in self.default_targets)
            clauses.append(f'{self.name} needs the layer aliases {choices}')
        for capability in self.requires:
            if capability not in host.capabilities:
                clauses.append(
                    f'{self.name} needs the capability {capability!r} '
                    f'({HOST_CAPABILITIES[capability]})')
        return clauses

    def check_host(self, host) -> None:
        """Raise, naming the method, the host, what it lacks and what it
        offers, unless the method fits ``host``."""
        clauses = self.missing(host)
        if clauses:
            name = _class_name(host)
            mixer = f' mixes tokens with {host.token_mixer},' \
                if host.token_mixer else ''
            raise ValueError(
                f'{self.name} cannot adapt {name}: {"; ".join(clauses)}. '
                f'{name}{mixer} offers block sites '
                f'{tuple(host.block_sites)} (residual sites: '
                f'{residual_sites(host.block_sites)}), layer aliases '
                f'{tuple(host.layer_aliases)} and capabilities '
                f'{tuple(host.capabilities)}')

    def resolve_sites(self, host) -> List[str]:
        """The block sites of ``host`` this method fills; raises naming the
        method, the host and what it offers when one is missing."""
        self.check_host(host)
        resolved = self._wanted_sites(host)
        if not resolved:
            raise ValueError(
                f'{self.name} needs any block site; {type(host).__name__} '
                f'offers {tuple(host.block_sites)}')
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
        self.check_host(host)
        if self.targets is not None:
            return self.targets
        return next(choice for choice in self.default_targets
                    if all(t.split(':')[0] in host.layer_aliases
                           for t in choice))

    def linear_targets(self, host) -> Iterator[Tuple]:
        """``(name, layer, alias, parts, channels_first)`` of every frozen
        layer that :meth:`resolve_targets` names.

        A target is a layer alias, or ``'alias:parts'`` on a fused qkv
        layer: ``'qkv:qv'`` names its q and v thirds, and ``parts`` is then
        ``[(part, first output, outputs)]`` (else None). ``channels_first``:
        the host declares the alias's layers as maps of [B, C, H, W] maps
        (``host.channels_first_layers``). Raises naming the
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
                yield (name, layer, alias, parts,
                       alias in host.channels_first_layers)

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

    # -- merge, unmerge, unload ---------------------------------------------
    @staticmethod
    def layer_updates(host) -> List[Tuple[nn.Module, LayerUpdate]]:
        """``(frozen layer, update)`` of every :class:`LayerUpdate` of
        ``host`` (the layer is the update's parent)."""
        return [(host.get_submodule(name.rpartition('.')[0]), module)
                for name, module in host.named_modules()
                if isinstance(module, LayerUpdate)]

    def is_merged(self, host) -> bool:
        """Whether the method is folded into ``host``'s frozen weights."""
        return any(update.merged for _, update in self.layer_updates(host))

    def merge(self, host) -> None:
        """Fold the method into ``host``'s frozen weights and switch it off:
        the host computes what it computed (in eval mode), without the
        method's run-time cost. The default folds every
        :class:`LayerUpdate`; raises, changing nothing, when the method is
        merged already or has a module that cannot be folded."""
        if self.is_merged(host):
            raise ValueError(
                f'{self.name} is merged into {type(host).__name__} already; '
                'call unmerge(host) before merging again')
        updates = self.layer_updates(host)
        for name, module in host.named_modules():
            if isinstance(module, PEFTModule) and not getattr(
                    module, 'mergeable', False):
                raise NotImplementedError(
                    f'{self.name} cannot be merged into the frozen weights '
                    f'of {type(host).__name__}: {name} '
                    f'({type(module).__name__}) cannot be folded')
        if not updates:
            raise ValueError(f'{self.name}: {type(host).__name__} holds no '
                             f'{self.name} module to merge')
        for layer, update in updates:
            update.merge_into(layer)

    def unmerge(self, host) -> None:
        """Undo :meth:`merge`: the frozen weights as they were, bit for bit,
        and the method switched on again; raises unless merged."""
        if not self.is_merged(host):
            raise ValueError(
                f'{self.name} is not merged into {type(host).__name__}')
        for layer, update in self.layer_updates(host):
            if update.merged:
                update.unmerge_from(layer)

    def unload(self, host) -> None:
        """Remove the method from ``host`` (unmerging it first if merged):
        every module and hook it added goes and ``host.peft`` becomes None.
        The host then has the plain host's state-dict keys and outputs; its
        parameters keep their ``requires_grad``."""
        if self.is_merged(host):
            self.unmerge(host)
        removed = []
        for name, module in list(host.named_modules()):
            if not isinstance(module, PEFTModule) or name.startswith(
                    tuple(r + '.' for r in removed)):
                continue
            for child in module.modules():
                if isinstance(child, LayerUpdate):
                    child.detach()
            while True:  # with containers it leaves empty (ParaX's centers)
                parent, _, attr = name.rpartition('.')
                delattr(host.get_submodule(parent), attr)
                removed.append(name)
                container = host.get_submodule(parent)
                if not parent or len(container._modules) or not isinstance(
                        container, (nn.ModuleList, nn.ModuleDict)):
                    break
                name = parent
        host.peft = None

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items()
                         if not k.startswith('_'))
        return f'{self.name}({args})'


def build_peft_method(cfg) -> Optional[PEFTMethod]:
    """A :class:`PEFTMethod` from a config dict (or an instance, or None)."""
    if cfg is None or isinstance(cfg, PEFTMethod):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError('peft must be a dict with a type, e.g. '
                        f"dict(type='ParaX', hidden_dim=128), got {cfg!r}")
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
