_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_cifar100.py',
    '../_base_/peft_runtime.py'
]
# AdaptFormer on the frozen MAE ViT-B/16 (Table 4): a bottleneck C -> 192 -> C
# (ReLU, dropout 0.1, scale 0.1, zero-initialised up projection) parallel to
# the MLP of every block (it reads the stream before norm2); width 192 is the
# ParaX reference's --ffn_num default. 3,550,464 trainable backbone
# parameters, 4,319,464 with a 1000-class head as the paper counts its
# ViT-B rows (paper: 4.3M; see README). As the host's other block sites,
# the adapter acts on the patch tokens only (the official one also adapts
# the class token; see README).
# lr 0.4 (0.1 x 1024 / 256) and the rest of the recipe are the full sibling's,
# the ParaX reference's, which is AdaptFormer's own image recipe (its
# main_image.py: SGD, base lr 0.1, total batch 1024, 100 epochs, 20 warm-up).
model = dict(
    backbone=dict(
        peft=dict(
            type='AdaptFormer', hidden_dim=192, scale=0.1, dropout=0.1)))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
