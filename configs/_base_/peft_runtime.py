# What the PEFT recipes (ParaX and the comparison methods) add to their full
# fine-tuning siblings, besides the method (model.backbone.peft) and its
# learning rate.

# As in the reference training scripts, which never call model.init_weights():
# only the backbone initialises (loading its checkpoint), the necks and heads
# keep their constructor init ('init_cfg' applies OpenMMLab's init_cfg). The
# Swin and ConvNeXt rows; the ViT-B and VMamba-B rows inherit
# peft_runtime_init-cfg.py instead.
head_init = 'constructor'
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),  # checks the freeze, logs # P
    dict(type='mmparax.PEFTCheckpointHook')  # *_peft.safetensors adapter files
]
