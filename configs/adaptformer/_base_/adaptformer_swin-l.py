_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='AdaptFormer', hidden_dim=224, scale=0.1, dropout=0.1)
