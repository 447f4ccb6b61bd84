_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_imagenet-r.py',
    '../_base_/peft_runtime.py'
]
# RepAdapter on the frozen MAE ViT-B/16 (Table 4): 1x1 C -> 126, dropout 0.1,
# grouped (2) 1x1 126 -> C zero-initialised, scale 1.0, on the normalised
# inputs of the attention and of the MLP of every block (patch tokens);
# 3,505,104 trainable backbone parameters, 4,274,104 with a
# 1000-class head as the paper counts its ViT-B rows (paper: 4.3M; 128 prints
# it too, 126 is the closer; see README).
# RepAdapter publishes no recipe for these sets: lr 0.4 (0.1 x 1024 / 256) and
# the rest of the recipe are the full sibling's, the ParaX reference's.
model = dict(
    backbone=dict(
        peft=dict(
            type='RepAdapter', hidden_dim=126, groups=2, scale=1.0,
            dropout=0.1)))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
