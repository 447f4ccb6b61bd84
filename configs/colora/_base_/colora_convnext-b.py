_base_ = '../../_base_/peft_runtime.py'
peft = dict(type='CoLoRA', rank=(64, 32, 32, 128))
