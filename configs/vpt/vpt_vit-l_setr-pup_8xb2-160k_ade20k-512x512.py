_base_ = [
    '../full/full_vit-l_setr-pup_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# VPT-deep on the frozen ViT-L/16 with SETR-PUP (Table 7): 10 prompt tokens
# prepended (after the cls token) to the input of every one of the 24
# blocks and removed after it.
# 245,760 trainable backbone parameters (24 x 10 x 1024 prompts); with the
# SETR-PUP heads (13,143,640) the model trains 13,389,400 (13.4M; the paper's
# Table 7 # P counts the heads and prints 13.6M, which 17-20 tokens per block
# would print). 10 tokens as in the Swin VPT rows; the VPT paper's SETR
# table, as recalled but not checked here, puts VPT-deep 0.25M (10 x 24 x
# 1024) above its head-only row (README.md).
# The learning rate is that of mmseg's SETR recipe of the full fine-tuning
# row (SGD lr 0.001, heads x10, fp32), unchanged: the VPT code publishes no
# segmentation recipe, and the VPT paper's SETR values could not be checked
# here (see README.md).
model = dict(backbone=dict(peft=dict(type='VPT', num_tokens=10)))
optim_wrapper = dict(optimizer=dict(lr=0.001))
