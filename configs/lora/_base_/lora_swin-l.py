_base_ = '../../_base_/peft_runtime.py'
# the update is scaled by alpha / rank = 1/112
peft = dict(type='LoRA', rank=112, alpha=1, targets=['qkv:qv'])
