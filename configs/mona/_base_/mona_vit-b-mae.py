_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(type='Mona', hidden_dim=75)
