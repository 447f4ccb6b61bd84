_base_ = '../../_base_/peft_runtime.py'
peft = dict(
    type='RepAdapter', hidden_dim=160, groups=2, scale=1.0,
    dropout=0.1)
