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
from typing import Dict, List, Optional, Sequence

import torch.nn as nn

from mmparax.registry import PEFT_METHODS


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


class PEFTMethod:
    """Base of the registered PEFT methods.

    Subclasses implement :meth:`attach` and may override :meth:`site_forward`
    (how the module at a block site is called) and :meth:`merge`.

    Args:
        sites (Sequence[str], optional): Block sites to fill. None: the
            method's :attr:`default_sites` (``'residual'`` stands for every
            site after a residual add, ``host.residual_sites``).
    """

    #: what ``sites=None`` means: site names ('residual' expands to
    #: host.residual_sites), or a tuple of such tuples, one per kind of
    #: host, of which the first the host offers entirely is taken
    default_sites: Sequence = ()

    def __init__(self, sites: Optional[Sequence[str]] = None):
        if sites is not None and (isinstance(sites, str)
                                  or not all(isinstance(s, str)
                                             for s in sites)):
            raise TypeError(f'{self.name}: sites must be a list of site '
                            f'names such as ["post_attn"], got {sites!r}')
        self.sites = None if sites is None else tuple(sites)

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

    # -- what a method does -------------------------------------------------
    def attach(self, host) -> None:
        """Build the method's modules and register them on ``host``."""
        raise NotImplementedError

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
    if isinstance(name, str):
        name = name.split('.')[-1]  # 'mmparax.ParaX' works too
        cls = PEFT_METHODS.get(name)
        if cls is None:
            raise KeyError(f'unknown PEFT method {name!r}; registered: '
                           f'{sorted(PEFT_METHODS.module_dict)}')
    else:
        cls = name
    try:
        return cls(**cfg)
    except TypeError as error:
        raise TypeError(f'{cls.__name__}: {error}') from error
