"""Convert a pretrained backbone or a full checkpoint to ``.safetensors``.

    python tools/model_converters/to_safetensors.py CONFIG SRC [OUT] [--full]

Pretrained (default): SRC is read as the config's ``checkpoint_file`` is
(any supported layout: official Microsoft / Facebook / timm / MAE files,
OpenMMLab conversions, the ``backbone.`` part of a detector or segmentor),
converted to the host's key layout once, checked strictly against the model
of CONFIG, and OUT holds the pretrained tensors. Point ``checkpoint_file``
(``model.backbone.init_cfg.checkpoint``) at OUT.

``--full``: SRC is a full checkpoint of the model of CONFIG (what a run
writes); OUT holds its state dict and loads with ``load_from`` or
``tools/test.py CONFIG OUT``. OUT defaults to SRC with ``.safetensors``.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis.peft_checkpoint import _model, load_full_checkpoint
from mmparax.apis.runtime import add_trust_argument
from mmparax.apis.upstream_warnings import silence_upstream_warnings
from mmparax.utils.safetensors_file import SAFETENSORS_EXT, write_safetensors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config whose model the file fits')
    parser.add_argument('src', help='pretrained or full checkpoint')
    parser.add_argument('out', nargs='?', help=f'output {SAFETENSORS_EXT}')
    parser.add_argument('--full', action='store_true',
                        help='SRC is a full checkpoint of the model')
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    out = args.out or osp.splitext(args.src)[0] + SAFETENSORS_EXT
    if not out.endswith(SAFETENSORS_EXT):
        raise SystemExit(f'{out}: name the output *{SAFETENSORS_EXT}')
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.init_cfg = None
    model = _model(MODELS.build(cfg.model))
    if args.full:
        checkpoint = load_full_checkpoint(model, args.src, args.config,
                                          args.trust_checkpoint)
        state = checkpoint.get('state_dict', checkpoint)
    else:
        backbone = model.backbone
        backbone.load_pretrained(args.src)  # converted, resized, strict
        own = backbone.state_dict()
        state = {k: own[k] for k in backbone.pretrained_state_keys()}
    write_safetensors(out, state)
    print(f'{out}: {len(state)} tensors, '
          f'{os.path.getsize(out) / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
