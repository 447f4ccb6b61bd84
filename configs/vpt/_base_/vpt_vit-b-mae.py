_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(type='VPT', num_tokens=10)
