import torch.nn as nn


class PEFTModule(nn.Module):
    """Base of every module a PEFT method inserts into a frozen backbone.

    Host backbones keep the parameters of these modules trainable and freeze
    the rest. ``peft_component`` names the group the parameters are reported
    under (``'adapters'``, ``'expert_centers'``, ...).
    """

    peft_component = 'adapters'

    def reset_parameters(self):
        """Re-initialise the module as at construction."""
        raise NotImplementedError
