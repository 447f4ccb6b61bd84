_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_svhn.py',
    './_base_/parax_vit-b-mae.py'
]
# ParaX on the frozen MAE ViT-B/16 (Table 4), as the reference's ViT
# (models/vit_parax.py, scripts/train_svhn.sh): one adapter after every block
# (after its MLP residual, on the patch tokens: the class token bypasses it),
# the 12 adapters routing into one expert center of 12 experts; hidden_dim 128,
# kernels 3/5/7, router width 16, layer and residual scales 1. 3,098,340
# trainable backbone parameters; the paper's 3.9M is this plus a 1000-class
# head (3,867,340; see README). lr 0.4 (0.1 x 1024 / 256) and the rest of the
# recipe: the full sibling's, the reference's scripts/train_svhn.sh.
model = dict(backbone=dict(peft=_base_.peft))
