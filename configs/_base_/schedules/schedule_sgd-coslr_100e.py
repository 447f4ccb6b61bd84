# The schedule of the Table 4 recipes (the ParaX reference's
# image_classification/main_image_parax.py, AdaptFormer's image recipe):
# 100 epochs, SGD momentum 0.9, lr = 0.1 x total batch / 256 = 0.4 at the
# total batch of 1024, linear warm-up over 20 epochs then a half-cycle cosine
# to 0, both updated every iteration; weight decay 0 (the ImageNet-R configs
# set 1e-4, as its reference script); fp16 with a dynamic loss scale (the
# reference trains under torch.cuda.amp). On a CPU pass
# --cfg-options optim_wrapper.type=OptimWrapper.
max_epochs = 100
warmup_epochs = 20
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    # leaves frozen parameters (PEFT) out of the optimizer; no-op otherwise
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, weight_decay=0.),
    # one group: the decay (if any) applies to every trained tensor, norms
    # and biases included, as the reference's single SGD group
    paramwise_cfg=dict())

# lr(i) = 0.4 * i / (20 L) in the first 20 epochs of L iterations, then
# 0.4 * (1 + cos(pi * (i - 20 L) / (80 L))) / 2: the reference's
# util/lr_sched.py. mmengine's LinearLR cannot start at exactly 0 (it
# divides by the start factor) and reaches 1 at the last warm-up iteration,
# one iteration before the reference: the two differ by at most 0.4 / (20 L)
# during the warm-up. The cosine part is the same at every iteration.
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]

# lr was set for a total batch of 1024 (8 GPUs x 128 images); --auto-scale-lr
# style scaling is off unless enabled
auto_scale_lr = dict(enable=False, base_batch_size=1024)
