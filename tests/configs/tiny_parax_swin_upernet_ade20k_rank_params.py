# The tiny config, plus a hook saving each rank's parameters (needs
# tests/configs on PYTHONPATH).
_base_ = './tiny_parax_swin_upernet_ade20k.py'
custom_imports = dict(
    imports=['mmparax', 'rank_params_hook'], allow_failed_imports=False)
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),
    dict(type='SaveRankParamsHook')
]
