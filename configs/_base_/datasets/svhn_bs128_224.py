_base_ = ['./image-folder_bs128_224.py']

# SVHN at 224x224 (Table 4): mmpretrain's CustomDataset reads
# data/svhn/{train,test}/<digit>/<index>.png, which
# tools/dataset_converters/svhn.py writes from train_32x32.mat and
# test_32x32.mat (73,257 train / 26,032 test 32x32 images, PNG: the original
# pixels). The label of an image is the index of its folder in sorted order
# (the digit), as torchvision's SVHN gives it.
data_root = 'data/svhn'
data_preprocessor = dict(num_classes=10)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
