_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(type='SNELL', rank=30, sparsity=0.5, dropout=0.1, drop_path=0.1)
