# The PEFT runtime of the ViT-B image classification (Table 4) and VMamba-B
# rows: the heads take OpenMMLab's init_cfg. The ParaX reference's image
# classification code re-initialises the head weight (truncated normal, std
# 0.01) after loading the backbone; it gives no VMamba-B recipe, and there the
# heads keep their init_cfg too (our choice).
_base_ = './peft_runtime.py'
head_init = 'init_cfg'
