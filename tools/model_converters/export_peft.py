"""Export the PEFT (adapter-only) part of a full mmparax checkpoint.

    python tools/model_converters/export_peft.py CONFIG CHECKPOINT [OUT]

The full checkpoint must fit the model of CONFIG exactly. OUT (a
safetensors file; default: CHECKPOINT with ``_peft.safetensors`` for its
extension) holds the method's modules, the backbone's new layers and the
heads, and records the method settings, the fingerprint of the frozen
pretrained backbone, ``dataset_meta`` and the config; ``tools/test.py OUT``
evaluates it over the config's pretrained checkpoint.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis.peft_checkpoint import (
    load_full_checkpoint,
    peft_path,
    save_peft_checkpoint,
)
from mmparax.apis.runtime import add_trust_argument
from mmparax.apis.upstream_warnings import silence_upstream_warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config the checkpoint was trained '
                        'with')
    parser.add_argument('checkpoint', help='full checkpoint')
    parser.add_argument('out', nargs='?', help='output file')
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.init_cfg = None  # the checkpoint holds the backbone
    model = MODELS.build(cfg.model)
    checkpoint = load_full_checkpoint(model, args.checkpoint, args.config,
                                      args.trust_checkpoint)
    model.load_state_dict(checkpoint.get('state_dict', checkpoint))
    out = args.out or peft_path(args.checkpoint)
    meta = {
        k: v
        for k, v in checkpoint.get('meta', {}).items()
        if k in ('epoch', 'iter', 'seed', 'mmengine_version', 'dataset_meta')
    }
    save_peft_checkpoint(
        model, out, cfg,
        meta=dict(meta, full_checkpoint=osp.basename(args.checkpoint)))
    full, small = os.path.getsize(args.checkpoint), os.path.getsize(out)
    print(f'{out}: {small / 2**20:.1f} MiB ({args.checkpoint}: '
          f'{full / 2**20:.1f} MiB)')


if __name__ == '__main__':
    main()
