_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='VPT', num_tokens=10)
