"""What the tools log: one optimizer table instead of a line per parameter,
and no upstream deprecation notices.

- ``PEFTOptimWrapperConstructor`` keeps mmengine's ``paramwise_options --``
  lines out of the log and logs one table whose numbers are those of the
  built optimizer's param groups.
- ``mmparax.apis.upstream_warnings.silence_upstream_warnings`` hides
  mmseg's ``build_loss`` and mmseg's / mmdet's ``avg_non_ignore`` notices
  and nothing else.
"""
import glob
import json
import logging
import os.path as osp
import re
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmparax.engine import PEFTOptimWrapperConstructor
from mmparax.testing import (
    make_ade20k,
    run_tool,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CFG = osp.join(REPO, 'tests', 'configs',
                    'tiny_parax_swin_upernet_ade20k.py')
ADE_SCHEDULE = osp.join(REPO, 'configs', '_base_', 'schedules',
                        'schedule_160k.py')
ROW = re.compile(r'^(\S+)\s+([\d,]+)\s+([\d,]+)\s+(\S+)(?: \(x\S+\))?\s+'
                 r'(\S+)(?: \(x\S+\))?$')


def tiny_segmentor():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import mmparax  # noqa: F401
    cfg = Config.fromfile(TINY_CFG)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg.model)


def ade20k_optim():
    """The ADE20K recipe's optimizer and paramwise_cfg, in fp32."""
    optim = Config.fromfile(ADE_SCHEDULE).optim_wrapper.to_dict()
    paramwise = optim.pop('paramwise_cfg')
    return dict(type='OptimWrapper', optimizer=optim['optimizer']), paramwise


def build_and_capture(model, optim, paramwise, log_level='INFO'):
    """Build the optimizer under a fresh current MMLogger; return the
    wrapper and the (level, message) pairs its handlers would write."""
    logger = MMLogger.get_instance(
        f'test_logs_{uuid.uuid4().hex}', log_level=log_level)
    records = []
    handler = logging.Handler(level=getattr(logging, log_level))
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        wrapper = PEFTOptimWrapperConstructor(optim, paramwise)(model)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.INFO)  # it stays the current logger
    return wrapper, [(r.levelno, r.getMessage()) for r in records]


def parse_table(messages):
    """``{rule: (tensors, elements, lr, weight_decay)}`` of the logged
    table (``None`` for ``-``)."""
    (text, ) = [m for _, m in messages if 'optimizer parameter groups' in m]
    lines = text.splitlines()
    assert lines[1].split()[:3] == ['rule', 'tensors', 'elements']
    rows = {}
    for line in lines[2:]:
        if line.startswith('total'):
            continue
        m = ROW.match(line)
        assert m, line
        rule, tensors, elements, lr, wd = m.groups()
        rows[rule] = (int(tensors.replace(',', '')),
                      int(elements.replace(',', '')),
                      None if lr == '-' else float(lr),
                      None if wd == '-' else float(wd))
    return rows


def expected_table(model, wrapper, custom_keys):
    """The same numbers from the param groups alone: each optimized tensor
    goes to the longest custom key in its name (mmengine's rule), else to
    ``default``, with its group's lr and weight decay."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = sorted(sorted(custom_keys), key=len, reverse=True)
    rows = {f'custom_keys[{k!r}]': [0, 0, None, None] for k in custom_keys}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            key = next((k for k in keys if k in name), None)
            rule = 'default' if key is None else f'custom_keys[{key!r}]'
            row = rows.setdefault(rule, [0, 0, None, None])
            for i, value in ((2, group['lr']), (3, group['weight_decay'])):
                assert row[i] in (None, value), (rule, row, value)
                row[i] = value
            row[0] += 1
            row[1] += param.numel()
    return {rule: tuple(row) for rule, row in rows.items()}


def shown(row):
    """A row as the table prints it (6 significant digits)."""
    return tuple(v if v is None or isinstance(v, int) else float(f'{v:g}')
                 for v in row)


def test_optimizer_table_replaces_per_parameter_lines():
    model = tiny_segmentor()
    optim, paramwise = ade20k_optim()
    wrapper, messages = build_and_capture(model, optim, paramwise)
    text = [m for _, m in messages]
    assert not any('paramwise_options' in m for m in text)
    assert not any('requires_grad=False' in m for m in text)
    assert sum('\n' in m for m in text) == 1  # only the table is multi-line

    table = parse_table(messages)
    expected = expected_table(model, wrapper, paramwise['custom_keys'])
    assert table == {rule: shown(row) for rule, row in expected.items()}
    # the recipe: backbone keys at the base lr and decay, the frozen
    # position tables in no group, heads at the defaults
    base_lr = optim['optimizer']['lr']
    base_wd = optim['optimizer']['weight_decay']
    backbone = table["custom_keys['backbone']"]
    assert backbone[0] > 0 and backbone[2:] == (base_lr, base_wd)
    assert table["custom_keys['relative_position_bias_table']"][0] == 0
    assert table['default'][2:] == (base_lr, base_wd)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(r[0] for r in table.values()) == len(trainable)
    assert sum(r[1] for r in table.values()) == sum(
        p.numel() for p in trainable)


def test_table_names_the_decay_rules():
    """Without custom keys the norm and bias rules get their own rows;
    the rows add up to the groups with that lr and weight decay."""
    model = tiny_segmentor()
    optim = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05))
    paramwise = dict(norm_decay_mult=0., bias_decay_mult=0.5)
    wrapper, messages = build_and_capture(model, optim, paramwise)
    table = parse_table(messages)
    assert set(table) == {'norm_decay_mult', 'bias_decay_mult', 'default'}
    assert table['norm_decay_mult'][3] == 0.0
    assert table['bias_decay_mult'][3] == pytest.approx(0.025)
    by_value = Counter()
    for group in wrapper.optimizer.param_groups:
        by_value[group['weight_decay']] += len(group['params'])
    assert {wd: n for n, _, _, wd in table.values()} == {
        float(f'{wd:g}'): n for wd, n in by_value.items()}


def test_per_parameter_lines_stay_at_debug():
    model = tiny_segmentor()
    optim, paramwise = ade20k_optim()
    _, messages = build_and_capture(model, optim, paramwise, 'DEBUG')
    per_param = [(lv, m) for lv, m in messages if 'paramwise_options' in m]
    assert per_param
    assert {lv for lv, _ in per_param} == {logging.DEBUG}


@pytest.mark.e2e
def test_training_log_has_no_per_parameter_lines(tmp_path):
    """tools/train.py, 4 iterations of the tiny config with the ADE20K
    recipe's custom keys: the log holds the table and no line per
    parameter."""
    data_root = make_ade20k(
        str(tmp_path / 'ade'), num_train=4, num_val=2, img_size=(64, 64),
        num_classes=150, seed=0)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin_tiny.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=0)))
    _, paramwise = ade20k_optim()
    keys = [
        f'optim_wrapper.paramwise_cfg.custom_keys.{key}.{mult}={value}'
        for key, setting in paramwise['custom_keys'].items()
        for mult, value in setting.items()
    ]
    proc = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'work_dir',
        '--cfg-options',
        *[f'{s}_dataloader.dataset.data_root={data_root}'
          for s in ('train', 'val', 'test')],
        f'model.backbone.init_cfg.checkpoint={pretrained}', *keys,
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (log_file, ) = glob.glob(str(tmp_path / 'work_dir' / '*' / '*.log'))
    with open(log_file) as f:
        lines = f.read().splitlines()
    print(f'{len(lines)} lines in {log_file}')
    assert not [line for line in lines if 'paramwise_options' in line]
    assert 'paramwise_options' not in proc.stdout + proc.stderr
    start = next(i for i, line in enumerate(lines)
                 if 'optimizer parameter groups' in line)
    assert lines[start + 1].split()[:3] == ['rule', 'tensors', 'elements']
    assert any(line.startswith("custom_keys['backbone']")
               for line in lines[start:start + 8])


WARNINGS_SCRIPT = r'''
import json
import warnings

import mmdet.models  # noqa: F401
import mmseg.models  # noqa: F401
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.models.builder import build_head, build_loss
from mmseg.registry import MODELS as MMSEG_MODELS

from mmparax.apis.upstream_warnings import silence_upstream_warnings

AVG = ('Default ``avg_non_ignore`` is False, if you would like to ignore '
       'the certain label and average loss over non-ignore labels, which is '
       'the same with PyTorch official cross_entropy, set '
       '``avg_non_ignore=True``.')


def trigger():
    MMSEG_MODELS.build(dict(type='CrossEntropyLoss'))  # mmseg avg_non_ignore
    build_loss(dict(type='CrossEntropyLoss'))  # build_loss (+ avg)
    MMDET_MODELS.build(  # mmdet avg_non_ignore
        dict(type='mmdet.CrossEntropyLoss', ignore_index=255))
    try:  # same module as build_loss, another message: still shown
        build_head(dict(type='nonexistent'))
    except KeyError:
        pass
    warnings.warn('check your config: lr looks large')  # the user's own
    warnings.warn(AVG)  # the upstream text from another module: shown


def run(silence):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        if silence:
            silence_upstream_warnings()
            silence_upstream_warnings()  # idempotent
        trigger()
    return [[w.category.__name__, str(w.message), w.filename]
            for w in caught]


print(json.dumps(dict(before=run(False), after=run(True))))
'''


@pytest.mark.e2e
def test_silence_upstream_warnings():
    proc = subprocess.run([sys.executable, '-c', WARNINGS_SCRIPT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    def kinds(caught):
        out = Counter()
        for category, message, filename in caught:
            assert category == 'UserWarning'
            if message.startswith('``build_loss`` would be deprecated'):
                out['build_loss'] += 1
            elif message.startswith('``build_head`` would be deprecated'):
                out['build_head'] += 1
            elif message.startswith('Default ``avg_non_ignore``'):
                if 'mmseg' in filename:
                    out['avg mmseg'] += 1
                elif 'mmdet' in filename:
                    out['avg mmdet'] += 1
                else:
                    out['avg other'] += 1
            elif message.startswith('check your config'):
                out['user'] += 1
        return out

    before, after = kinds(result['before']), kinds(result['after'])
    # the upstream code paths do warn
    assert before == {'build_loss': 1, 'avg mmseg': 2, 'avg mmdet': 1,
                      'build_head': 1, 'user': 1, 'avg other': 1}
    # silenced: exactly the two upstream notices from their modules
    assert after == {'build_head': 1, 'user': 1, 'avg other': 1}
