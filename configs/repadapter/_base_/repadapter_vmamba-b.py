_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(
    type='RepAdapter', hidden_dim=174, groups=2, scale=1.0,
    dropout=0.1)
