"""What every host backbone shares.

A host is a thin subclass of an OpenMMLab backbone and :class:`PEFTHostMixin`.
It says where a PEFT method may act and runs its blocks through one hook;
everything else (building the method, freezing, accounting, strict loading,
activation checkpointing, the rules every host obeys) lives here.
"""
import fnmatch
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log

from mmparax.peft import PEFTModule, build_peft_method
from mmparax.peft.base import residual_sites
from mmparax.utils.checkpoint import load_backbone_state_dict

PRETRAINED = 'pretrained'


def mixer_mlp_sites(mixer: str) -> Dict[str, str]:
    """Block sites of a block with a token-mixer residual and an MLP
    residual (Swin, VMamba), in the order the block meets them:

    * ``pre_<mixer>`` / ``pre_mlp``: the branch input, before its norm (the
      residual keeps the stream);
    * ``<mixer>_in`` / ``mlp_in``: the normalised input of the mixer / MLP;
    * ``<mixer>_out`` / ``mlp_out``: the output of the mixer / MLP branch
      (drop path applied), before the residual add;
    * ``post_<mixer>`` / ``post_mlp``: after the residual add (held in
      ``adapter1`` / ``adapter2``);
    * ``mlp_parallel``: reads the stream before ``norm2``, its output is
      added to the block's output.
    """
    return {
        f'pre_{mixer}': f'pre_{mixer}_adapter',
        f'{mixer}_in': f'{mixer}_in_adapter',
        f'{mixer}_out': f'{mixer}_out_adapter',
        f'post_{mixer}': 'adapter1',
        'pre_mlp': 'pre_mlp_adapter',
        'mlp_in': 'mlp_in_adapter',
        'mlp_out': 'mlp_out_adapter',
        'mlp_parallel': 'mlp_adapter',
        'post_mlp': 'adapter2'
    }


class PEFTHostMixin:
    """Sites, freezing, accounting and strict loading of a host backbone.

    A subclass declares:

    * :attr:`block_sites`: ``{site: attribute}``, the places of a block where
      a method may put a module, and the attribute of the block that holds
      it (the name its parameters are saved under);
      (``post_*`` sites are those right after a residual add:
      :attr:`residual_sites`);
    * :attr:`layer_aliases`: ``{alias: pattern}``, frozen layers a method may
      update, as ``fnmatch`` patterns over module names;
    * :attr:`channels_first_layers` names the aliases whose linear layers
      map [B, C, H, W] maps (the rest: channels last);
    * :attr:`capabilities` (names of ``mmparax.peft.HOST_CAPABILITIES``),
      :attr:`token_mixer` and :attr:`site_readers`;
    * :meth:`peft_stages`, :meth:`new_module_names` and the checkpoint
      hooks :meth:`convert_checkpoint`, :meth:`ignored_checkpoint_keys`,
      :meth:`adapt_checkpoint`;

    and implements ``forward_block(block, x, ...)``, the one place its blocks
    run, calling :meth:`site` (tokens) or :meth:`site_map` (maps) at each
    site. Its ``forward`` runs every block through :meth:`run_block`. A block
    called on its own runs the frozen block only.

    Every site's module is called the same way, ``module(tokens
    [B, L, C], (H, W))``, through the method's ``site_forward``; it returns
    tokens of the same shape, except at ``attn_tokens`` (hosts with
    attention, :meth:`extra_tokens`): given the block's input, it returns
    extra tokens [p, C] or [B, p, C] that every token's attention sees as
    keys and values (normalised by the attention's norm, without position
    bias or mask), and that reach no output.

    At the end of ``__init__`` it calls :meth:`init_peft`. With a method,
    every parameter that existed before the method was attached is frozen;
    the new layers (:meth:`new_module_names`, e.g. per-output norms, which
    ImageNet checkpoints lack) train if the method says so
    (``PEFTMethod.trains_output_norms``: its official code's choice, or the
    config's ``train_output_norms``), else keep their initial values;
    everything the method added trains.
    Without one (``peft=None``) the backbone is fully trainable: the full
    fine-tuning baseline.

    With ``init_cfg=dict(type='Pretrained', checkpoint=...)``,
    :meth:`init_weights` loads the checkpoint strictly: every pretrained
    parameter must be found with the right shape, and keys the backbone does
    not have raise, except those :meth:`ignored_checkpoint_keys` accepts.
    """

    block_sites: Dict[str, str] = {}
    layer_aliases: Dict[str, str] = {}
    #: aliases whose linear layers map [B, C, H, W] maps
    channels_first_layers: Tuple[str, ...] = ()
    #: what the host offers beyond sites and layers (named in
    #: ``mmparax.peft.HOST_CAPABILITIES``), for ``PEFTMethod.requires``
    capabilities: Tuple[str, ...] = ()
    #: what the blocks mix tokens with, for error messages
    token_mixer = ''
    #: ``{site: alias}``: the frozen layer that reads the site's output and
    #: nothing else (what a linear module at the site can be folded into)
    site_readers: Dict[str, str] = {}
    #: False where the PEFT code this backbone follows keeps the new layers
    #: (:meth:`new_module_names`) frozen whatever the method: they then
    #: train only with the config's ``train_output_norms=True``
    output_norms_follow_method = True
    #: ``frozen_stages`` value that freezes nothing
    no_frozen_stages = -1
    #: name of the new norm of each output, formatted with its index in
    #: ``out_indices`` (OpenMMLab's ``'norm{}'``); None: outputs have none
    output_norm: Optional[str] = None
    #: group name of the layers of new_module_names() in the accounting
    new_layers_group = 'output_norms'

    # -- what the host says about itself ------------------------------------
    @property
    def residual_sites(self) -> Tuple[str, ...]:
        """The sites right after a residual add."""
        return residual_sites(self.block_sites)

    def peft_stages(self) -> List[Tuple[int, Sequence[nn.Module]]]:
        """``[(channels, blocks)]`` per stage."""
        raise NotImplementedError

    def new_module_names(self) -> List[str]:
        """Modules that are trained but are neither pretrained nor part of
        a method: by default the per-output norms :attr:`output_norm`."""
        if self.output_norm is None:
            return []
        return [self.output_norm.format(i) for i in self.out_indices]

    def train(self, mode: bool = True):
        """Set the training mode; with a method, :meth:`frozen_norms` stay
        in eval mode."""
        super().train(mode)
        if mode and getattr(self, 'peft', None) is not None:
            for module in self.frozen_norms():
                module.eval()
        return self  # OpenMMLab's backbones return None

    def frozen_norms(self) -> List[nn.Module]:
        """The normalisation layers with running statistics (BatchNorm*,
        SyncBatchNorm) that do not train: outside the method's modules, with
        every parameter frozen. With a method they stay in eval mode while
        the host trains (mmseg's ``norm_eval``), so they normalise with
        their pretrained statistics and never change them."""
        inside = tuple(n + '.' for n, m in self.named_modules()
                       if isinstance(m, PEFTModule))
        return [
            m for n, m in self.named_modules()
            if isinstance(getattr(m, 'running_mean', None), torch.Tensor)
            and not (n + '.').startswith(inside)
            and not any(p.requires_grad for p in m.parameters())
        ]

    def ignored_checkpoint_keys(self, key: str) -> bool:
        """Whether a checkpoint key the backbone lacks may be dropped."""
        return False

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        """Map a foreign key layout (e.g. the official release) to ours."""
        return state_dict

    def adapt_checkpoint(self, state_dict: Dict) -> Dict:
        """Resize tensors of a checkpoint to this backbone (in place)."""
        return state_dict

    # -- building the method ------------------------------------------------
    def init_peft(self, peft) -> None:
        """Attach the method ``peft`` (config dict, instance or None) and
        freeze what it does not train."""
        self.peft = build_peft_method(peft)
        before = [name for name, _ in self.named_parameters()]
        if self.peft is not None:
            frozen_stages = getattr(self, 'frozen_stages',
                                    self.no_frozen_stages)
            if frozen_stages > self.no_frozen_stages:
                raise ValueError(
                    f'{type(self).__name__} with {self.peft.name}: '
                    f'frozen_stages={frozen_stages} would freeze the '
                    "method's own modules in those stages and switch off "
                    'their drop path; the method already freezes every '
                    'pretrained parameter. Leave frozen_stages at '
                    f'{self.no_frozen_stages}.')
            self.peft.check_host(self)
            self.peft.check_widths(self)
            self.peft.attach(self)
        new = {
            name
            for prefix in self.new_module_names()
            for name, _ in self.get_submodule(prefix).named_parameters(
                prefix=prefix)
        }
        self._pretrained_names = frozenset(before) - new
        #: whether the new layers train (always without a method)
        self.trains_output_norms = self.peft is None or \
            self.peft.trains_output_norms(self)
        self._frozen_new_names = frozenset() if self.trains_output_norms \
            else frozenset(new)
        if self.peft is not None:
            frozen = self._pretrained_names | self._frozen_new_names
            for name, param in self.named_parameters():
                param.requires_grad = name not in frozen

    def add_site_module(self, stage: int, block: int, site: str,
                        module: nn.Module) -> None:
        """Put ``module`` at ``site`` of block ``block`` of ``stage``."""
        attr = self.block_sites[site]
        blk = self.peft_stages()[stage][1][block]
        if attr in blk._modules:
            raise ValueError(f'{site} of stage {stage} block {block} is '
                             f'taken by {type(blk._modules[attr]).__name__}')
        blk.add_module(attr, module)

    def add_frozen_parameters(self, names: Sequence[str]) -> None:
        """Count parameters a method created inside frozen layers (e.g. the
        bias a merge adds) as frozen backbone weights."""
        self._pretrained_names = self._pretrained_names | frozenset(names)

    def named_layers(self, alias: str) -> 'OrderedDict[str, nn.Module]':
        """The layers ``layer_aliases[alias]`` names, by module name."""
        pattern = self.layer_aliases[alias]
        return OrderedDict((name, m) for name, m in self.named_modules()
                           if fnmatch.fnmatchcase(name, pattern))

    # -- running blocks -----------------------------------------------------
    def has_site(self, block: nn.Module, site: str) -> bool:
        """Whether a module sits at ``site`` of ``block``."""
        return self.block_sites[site] in block._modules

    def site(self, block: nn.Module, site: str, x: torch.Tensor,
             hw_shape: Tuple[int, int]) -> torch.Tensor:
        """The module at ``site`` of ``block`` applied to tokens.

        Args:
            x (Tensor): [B, H*W, C].

        Returns:
            Tensor: [B, H*W, C]; ``x`` itself when nothing sits there.
        """
        module = block._modules.get(self.block_sites[site])
        if module is None:
            return x
        return self.peft.site_forward(self, module, x, hw_shape)

    def extra_tokens(self, block: nn.Module, x: torch.Tensor,
                     hw_shape: Tuple[int, int]) -> Optional[torch.Tensor]:
        """The tokens the module at ``attn_tokens`` of ``block`` adds to its
        attention, given the block's input ``x`` [B, L, C]: [p, C] or
        [B, p, C]; None when nothing sits there."""
        if not self.has_site(block, 'attn_tokens'):
            return None
        return self.site(block, 'attn_tokens', x, hw_shape)

    def site_map(self, block: nn.Module, site: str,
                 x: torch.Tensor) -> torch.Tensor:
        """:meth:`site` on a channel-first map: [B, C, H, W] -> same.

        The result keeps the memory layout of ``x``, so the frozen layers
        that follow compute exactly as in the plain backbone.
        """
        if not self.has_site(block, site):
            return x
        B, C, H, W = x.shape
        tokens = self.site(block, site, x.flatten(2).transpose(1, 2), (H, W))
        out = tokens.transpose(1, 2).reshape(B, C, H, W)
        if out.stride() != x.stride():
            out = torch.empty_like(x).copy_(out)
        return out

    def run_block(self, forward_block, block, x, *args):
        """``forward_block(block, x, *args)``, checkpointed with ``with_cp``.

        Non-reentrant: a method's modules inside a frozen block get their
        gradients even when nothing entering the block requires grad.
        """
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(
                forward_block, block, x, *args, use_reentrant=False)
        return forward_block(block, x, *args)

    # -- freezing and accounting --------------------------------------------
    def peft_components(self) -> 'OrderedDict[str, List[str]]':
        """Parameter names grouped by role.

        Returns:
            OrderedDict: the method's groups (named by its modules, e.g.
            ``'adapters'``, ``'expert_centers'``), then the host's new layers
            (:attr:`new_layers_group`), then ``'pretrained'``; every
            parameter in exactly one group.
        """
        owner = {}
        for prefix, module in self.named_modules():
            if isinstance(module, PEFTModule):
                for name, _ in module.named_parameters(prefix=prefix):
                    owner.setdefault(name, module.peft_component)
        groups = OrderedDict()
        for name, _ in self.named_parameters():
            if name in self._pretrained_names:
                group = PRETRAINED
            else:
                group = owner.get(name, self.new_layers_group)
            groups.setdefault(group, []).append(name)
        for last in (self.new_layers_group, PRETRAINED):
            groups[last] = groups.pop(last, [])
        return groups

    def pretrained_state_keys(self) -> List[str]:
        """State-dict keys of the pretrained backbone: its parameters and
        the buffers of modules that are neither the method's nor new."""
        own = tuple(
            prefix + '.' for prefix, m in self.named_modules()
            if prefix and isinstance(m, PEFTModule)) + tuple(
                prefix + '.' for prefix in self.new_module_names())
        params = dict(self.named_parameters())
        return [
            key for key in self.state_dict()
            if (key in self._pretrained_names) or (
                key not in params and not key.startswith(own))
        ]

    def peft_trainable_names(self) -> List[str]:
        """Parameters that train: the method's, and the new layers' unless
        they stay frozen (:attr:`trains_output_norms`)."""
        return [
            name for name in self.new_parameter_names()
            if name not in self._frozen_new_names
        ]

    def new_parameter_names(self) -> List[str]:
        """Parameters a checkpoint of the pretrained backbone lacks: the
        method's and the new layers' (trained or not)."""
        return [
            name for name, _ in self.named_parameters()
            if name not in self._pretrained_names
        ]

    # -- pretrained weights -------------------------------------------------
    def init_weights(self):
        init_cfg = self.init_cfg
        if not (isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained'):
            print_log(
                f'{type(self).__name__} has no pretrained checkpoint '
                "(init_cfg=dict(type='Pretrained', checkpoint=...)): the "
                'backbone keeps its RANDOM initialisation. This is only '
                'useful for tests.',
                logger='current',
                level=30)
            super().init_weights()
            self._reset_peft_modules()
            return
        if 'checkpoint' not in init_cfg:
            raise ValueError(f'init_cfg of {type(self).__name__} is '
                             "Pretrained but has no 'checkpoint' path")
        self.load_pretrained(init_cfg['checkpoint'],
                             prefix=init_cfg.get('prefix'))
        self._is_init = True

    def _reset_peft_modules(self):
        for module in self.modules():
            if isinstance(module, PEFTModule):
                module.reset_parameters()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None):
        """Load pretrained weights strictly from ``checkpoint``.

        Args:
            checkpoint (str): Path or URL of the checkpoint.
            prefix (str, optional): Take only keys under this prefix (e.g.
                ``'backbone.'`` of a full detector checkpoint). By default a
                checkpoint whose keys carry ``backbone.`` uses those only.
        """
        load_backbone_state_dict(self, checkpoint, prefix=prefix)
        print_log(
            f'{type(self).__name__}: loaded pretrained weights from '
            f'{checkpoint}',
            logger='current')


# The name of the first release.
PEFTBackboneMixin = PEFTHostMixin
