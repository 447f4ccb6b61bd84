_base_ = '../../_base_/peft_runtime_init-cfg.py'
peft = dict(
    type='ParaX', hidden_dim=128, kernel_sizes=(3, 5, 7),
    router_hidden=16, sites=('post_mlp', ))
