_base_ = '../../_base_/peft_runtime.py'
peft = dict(
    type='ParaX', hidden_dim=128, kernel_sizes=(3, 5, 7),
    router_hidden=16,
    # fp16 adapter maths on CUDA, as the reference recipes
    force_fp16=True)
