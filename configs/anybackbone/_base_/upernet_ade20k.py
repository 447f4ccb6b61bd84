# UperNet on ADE20K (512 x 512, 8 GPUs x 2 images) over the generic host: a
# config adds the backbone (model.backbone.backbone), its checkpoint, the
# heads' input widths and the learning rate.
_base_ = [
    '../../_base_/models/upernet_convnext.py',
    '../../_base_/datasets/ade20k.py', '../../_base_/default_runtime.py',
    '../../_base_/schedules/schedule_160k.py'
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(_delete_=True, type='mmparax.AnyBackbone'),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
