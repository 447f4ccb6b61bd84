_base_ = ['./image-folder_bs128_224.py']

# ImageNet-R at 224x224 (Table 4): mmpretrain's CustomDataset reads
# data/imagenet-r/{train,test}/<wnid>/<image>, a seeded random split of the
# 30,000 images of imagenet-r.tar into 24,000 train and 6,000 test images
# (200 classes), written by tools/dataset_converters/imagenet_r.py: ImageNet-R
# has no official split. The label of an image is the index of its WordNet id
# in sorted order, as torchvision's ImageFolder gives it.
data_root = 'data/imagenet-r'
data_preprocessor = dict(num_classes=200)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
