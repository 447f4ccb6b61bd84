_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='CoLoRA', rank=(32, 32, 32, 128))
