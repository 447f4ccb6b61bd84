_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='Mona', hidden_dim=144)
