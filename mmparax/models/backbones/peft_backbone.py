from collections import OrderedDict
from typing import Dict, Iterable, List, Optional

import torch.nn as nn
from mmengine.logging import print_log

from mmparax.peft import PEFTModule
from mmparax.utils.checkpoint import load_backbone_state_dict


class PEFTBackboneMixin:
    """What every host backbone shares: freezing, accounting, loading.

    A host backbone subclasses an OpenMMLab backbone and this mixin, inserts
    its :class:`PEFTModule` instances, then calls :meth:`freeze_for_peft`.
    Without PEFT modules and without that call, the backbone is fully
    trainable (the full fine-tuning baseline) and only gains strict loading.
    Trainable afterwards: every PEFT module and the modules listed by
    :meth:`new_module_names` (layers the dense-prediction backbone adds that
    ImageNet checkpoints do not have, such as per-output norms). Everything
    else is frozen.

    With ``init_cfg=dict(type='Pretrained', checkpoint=...)``,
    :meth:`init_weights` loads the checkpoint strictly: every pretrained
    parameter must be found with the right shape, and keys the backbone does
    not have raise, except those :meth:`ignored_checkpoint_keys` accepts.
    """

    def new_module_names(self) -> List[str]:
        """Names of modules that are trained but not PEFT modules."""
        return []

    def ignored_checkpoint_keys(self, key: str) -> bool:
        """Whether a checkpoint key the backbone lacks may be dropped."""
        return False

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        """Map a foreign key layout (e.g. the official release) to ours."""
        return state_dict

    def adapt_checkpoint(self, state_dict: Dict) -> Dict:
        """Resize tensors of a checkpoint to this backbone (in place)."""
        return state_dict

    # -- freezing and accounting -------------------------------------------
    def _new_modules(self) -> Iterable[nn.Module]:
        return [self.get_submodule(name) for name in self.new_module_names()]

    def freeze_for_peft(self):
        """Freeze everything but the PEFT modules and new modules."""
        for param in self.parameters():
            param.requires_grad = False
        for module in self.modules():
            if isinstance(module, PEFTModule):
                module.requires_grad_(True)
        for module in self._new_modules():
            module.requires_grad_(True)

    def peft_components(self) -> 'OrderedDict[str, List[str]]':
        """Parameter names of the backbone grouped by role.

        Returns:
            OrderedDict: ``{'adapters': [...], 'expert_centers': [...],
            'output_norms': [...], 'pretrained': [...]}`` (PEFT groups as the
            methods name them; ``pretrained`` holds what the checkpoint
            provides), every parameter in exactly one group.
        """
        groups = OrderedDict()
        owner = {}
        for prefix, module in self.named_modules():
            if isinstance(module, PEFTModule):
                for name, _ in module.named_parameters(prefix=prefix):
                    owner.setdefault(name, module.peft_component)
        for prefix in self.new_module_names():
            module = self.get_submodule(prefix)
            for name, _ in module.named_parameters(prefix=prefix):
                owner.setdefault(name, 'output_norms')
        for name, _ in self.named_parameters():
            groups.setdefault(owner.get(name, 'pretrained'), []).append(name)
        # PEFT groups first, then the new layers, then the pretrained ones
        for last in ('output_norms', 'pretrained'):
            groups[last] = groups.pop(last, [])
        return groups

    def peft_trainable_names(self) -> List[str]:
        """Names of the parameters the method trains in this backbone (all
        but the pretrained ones)."""
        return [
            name for group, names in self.peft_components().items()
            if group != 'pretrained' for name in names
        ]

    # -- pretrained weights ------------------------------------------------
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
