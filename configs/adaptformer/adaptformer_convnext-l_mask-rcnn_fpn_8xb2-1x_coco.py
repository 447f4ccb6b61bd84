_base_ = [
    '../full/full_convnext-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# AdaptFormer on the frozen ConvNeXt-L (Table 2): a bottleneck C -> 176 -> C
# (ReLU, dropout 0.1, scale 0.1 and the zero-initialised up projection of the
# official recipe) parallel to every block (it reads the block input, its
# output is added to the block output); 9,562,752 trainable backbone parameters
# (paper: 9.6M).
# AdaptFormer publishes no dense-prediction recipe: the learning rate is the
# ParaX recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        peft=dict(type='AdaptFormer', hidden_dim=176, scale=0.1, dropout=0.1)))
