_base_ = '../../_base_/peft_runtime.py'
# the update is scaled by alpha / rank = 1/32
peft = dict(type='LoRA', rank=32, alpha=1, targets=['fc1', 'fc2'])
