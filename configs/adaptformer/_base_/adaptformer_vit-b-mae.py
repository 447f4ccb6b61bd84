_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(type='AdaptFormer', hidden_dim=192, scale=0.1, dropout=0.1)
