_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='LoRand', hidden_dim=128, num_branches=9, branch_rank=8)
