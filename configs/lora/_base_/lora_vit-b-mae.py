_base_ = '../../_base_/peft_runtime_init-cfg.py'
# the update is scaled by alpha / rank = 1/85
peft = dict(type='LoRA', rank=85, alpha=1, targets=['qkv:qv'])
