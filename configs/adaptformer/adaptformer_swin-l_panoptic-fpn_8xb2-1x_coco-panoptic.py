_base_ = [
    '../full/full_swin-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# AdaptFormer on the frozen Swin-L (Table 3): a bottleneck C -> 224 -> C (ReLU,
# dropout 0.1, scale 0.1 and the zero-initialised up projection of the official
# recipe) parallel to the MLP of every block (it reads the stream before norm2,
# its output is added to the block output); 8,108,928 trainable backbone
# parameters (paper: 8.1M).
# AdaptFormer publishes no dense-prediction recipe: the learning rate is the
# ParaX recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        peft=dict(type='AdaptFormer', hidden_dim=224, scale=0.1, dropout=0.1)))
