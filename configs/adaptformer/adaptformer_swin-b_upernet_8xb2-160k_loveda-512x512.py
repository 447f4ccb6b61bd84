_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_loveda-512x512.py',
    './_base_/adaptformer_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. AdaptFormer on the frozen Swin-B on LoveDA
# (Table 10): a bottleneck C -> 224 -> C (ReLU, dropout 0.1, scale 0.1 and the
# zero-initialised up projection of the official recipe) parallel to the MLP of
# every block (it reads the stream before norm2, its output is added to the
# block output); 5,407,744 trainable backbone parameters (paper: 5.4M).
# AdaptFormer publishes no dense-prediction recipe: the learning rate is the
# ParaX recipe's for the same row (6e-5).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
