_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='SNELL', rank=27, sparsity=0.5, dropout=0.1, drop_path=0.1)
