_base_ = ['./image-folder_bs128_224.py']

# Food-101 at 224x224 (Table 4): mmpretrain's CustomDataset reads
# data/food-101/{train,test}/<class>/<id>.jpg, the official split
# (meta/train.txt, meta/test.txt: 75,750 train / 25,250 test images, up to
# 512 pixels) that tools/dataset_converters/food101.py arranges in folders.
# The label of an image is the index of its class in sorted order, as
# torchvision's Food101 gives it.
data_root = 'data/food-101'
data_preprocessor = dict(num_classes=101)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
