_base_ = [
    '../_base_/upernet_swin-b_160k_remote-sensing.py',
    '../_base_/datasets/potsdam.py'
]
# Full fine-tuning of Swin-B on ISPRS Potsdam (Table 10): the ADE20K Swin-B
# recipe (160k iterations, AdamW lr 6e-5, drop path 0.15; see the first
# base), as the paper states; 6 classes.
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=6),
    auxiliary_head=dict(num_classes=6))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
