# A method kept outside the package (my_peft.py, next to this file) on the
# generic PoolFormer-S12 host; run with this folder on PYTHONPATH:
#   cd demo/custom_imports && PYTHONPATH=. python ../../tools/train.py \
#       ssf_poolformer-s12_upernet_8xb2-160k_ade20k-512x512.py
_base_ = [
    '../../configs/anybackbone/'
    'full_poolformer-s12_upernet_8xb2-160k_ade20k-512x512.py',
    '../../configs/_base_/peft_runtime.py'
]
custom_imports = dict(
    imports=['mmparax', 'my_peft'], allow_failed_imports=False)
peft = dict(type='MySSF')
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
