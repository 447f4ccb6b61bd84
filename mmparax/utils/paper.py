"""The paper's figures recorded in the configs' metafiles."""
import ast
import functools
import os.path as osp
from typing import Iterator

import yaml


def parse_millions(value):
    """'5.2M' or 5.2 (millions) -> 5.2."""
    if isinstance(value, str):
        value = value.strip().rstrip('Mm')
    return float(value)


def paper_entry(config):
    """The metafile.yml entry of ``config`` in its folder, or None."""
    metafile = osp.join(osp.dirname(osp.abspath(config)), 'metafile.yml')
    if not osp.isfile(metafile):
        return None
    with open(metafile) as f:
        meta = yaml.safe_load(f)
    for model in meta.get('Models', []):
        if osp.basename(model.get('Config', '')) == osp.basename(config):
            return model
    return None


def _base_configs(config):
    """The files named by ``_base_`` in ``config`` (a Python config)."""
    if not config.endswith('.py') or not osp.isfile(config):
        return []
    try:
        with open(config, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=config)
    except (OSError, SyntaxError, ValueError):
        return []
    bases = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets)):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            bases = [value] if isinstance(value, str) else list(value)
    folder = osp.dirname(osp.abspath(config))
    return [
        osp.normpath(osp.join(folder, base)) for base in bases
        if isinstance(base, str)
        and osp.isfile(osp.join(folder, base))
    ]


def _inherited_entry(config):
    """(base config, metafile entry) of the nearest ``_base_`` ancestor of
    ``config`` that a metafile lists, or (None, None)."""
    seen = set()
    queue = _base_configs(config)
    while queue:
        base = queue.pop(0)
        if base in seen:
            continue
        seen.add(base)
        entry = paper_entry(base)
        if entry is not None:
            return base, entry
        queue.extend(_base_configs(base))
    return None, None


def paper_figures(config):
    """(paper # P in millions, metafile model name, reason) of ``config``.

    A config that no metafile.yml beside it lists (a user's own config, or
    one that inherits a recipe and changes it) has no paper figure: the
    first two are None and ``reason`` says why.
    """
    entry = paper_entry(config)
    if entry is not None:
        figure = entry['Metadata'].get('Trainable Parameters')
        if figure is None:
            return None, entry['Name'], (
                f"the paper prints no # P for {entry['Name']} (its metafile "
                'entry records none)')
        return parse_millions(figure), entry['Name'], None
    reason = (f'no paper figure is recorded for {osp.basename(config)}: '
              'no metafile.yml in its folder lists it')
    base, base_entry = _inherited_entry(config)
    if base_entry is not None:
        base_millions = parse_millions(
            base_entry['Metadata']['Trainable Parameters'])
        reason += (f'; it inherits {osp.basename(base)}, whose paper # P '
                   f'is {base_millions}M with that recipe\'s settings')
    return None, None, reason


#: what a paper's # P counts (``Trainable Parameters Scope`` of a metafile
#: entry): the trainable backbone (the default), the whole model with its
#: heads (Table 7), or the backbone plus a 1000-class linear head (Table 4)
SCOPES = ('backbone', 'model', 'backbone and a 1000-class head')


def paper_scope(entry: dict) -> str:
    """The :data:`SCOPES` entry of a metafile model (``'backbone'`` when it
    names none)."""
    scope = (entry or {}).get('Metadata', {}).get(
        'Trainable Parameters Scope', 'backbone')
    if scope not in SCOPES:
        raise ValueError(f"{entry['Name']}: Trainable Parameters Scope must "
                         f'be one of {SCOPES}, got {scope!r}')
    return scope


def scoped_count(scope: str, model) -> int:
    """The trainable parameters of ``model`` (a built config model) that
    ``scope`` counts."""
    backbone = getattr(model, 'backbone', model)
    trainable = model if scope == 'model' else backbone
    n = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    if scope == SCOPES[2]:
        n += 1000 * (backbone.embed_dims + 1)
    return n


def metafile_models(metafile: str) -> Iterator[dict]:
    """The ``Models`` entries of ``metafile``."""
    with open(metafile) as f:
        yield from (yaml.safe_load(f) or {}).get('Models', [])


#: the repository root, against which metafiles name their configs
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# the order of the paper's columns (its rows: :func:`paper_methods`)
BACKBONES = ('Swin-B', 'Swin-L', 'ConvNeXt-B', 'ConvNeXt-L', 'VMamba-B',
             'ViT-B', 'ViT-L')
DATASETS = ('ADE20K', 'COCO', 'Potsdam', 'LoveDA', 'CIFAR-100', 'SVHN',
            'Food-101', 'ImageNet-R')


def metafiles(sources=()) -> list:
    """The metafile.yml paths of ``sources`` (metafiles or folders holding
    one); by default every metafile ``model-index.yml`` imports."""
    if not sources:
        with open(osp.join(ROOT, 'model-index.yml')) as f:
            sources = [osp.join(ROOT, p) for p in yaml.safe_load(f)['Import']]
    paths = []
    for source in sources:
        path = osp.join(source, 'metafile.yml') if osp.isdir(source) \
            else source
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{source}: neither a metafile.yml nor a folder holding one')
        paths.append(path)
    return paths


@functools.lru_cache()
def paper_methods() -> tuple:
    """The metafile collections (methods) in the order ``model-index.yml``
    imports them: the order of the paper's rows."""
    names = []
    for metafile in metafiles():
        with open(metafile) as f:
            names += [c['Name'] for c in
                      (yaml.safe_load(f) or {}).get('Collections', [])]
    return tuple(names)


def config_path(model: dict) -> str:
    """The config file of a metafile model (``Config`` is relative to the
    repository root unless absolute)."""
    return model['Config'] if osp.isabs(model['Config']) else osp.join(
        ROOT, model['Config'])


def paper_table(model: dict) -> str:
    """Which of the paper's tables a metafile model reproduces."""
    if 'Paper Table' in model['Metadata']:
        return str(model['Metadata']['Paper Table'])
    results = {r['Task'] for r in model.get('Results', [])}
    architecture = model['Metadata'].get('Architecture', [])
    data = model['Metadata'].get('Training Data')
    if 'Panoptic Segmentation' in results:
        return '3'
    if 'Instance Segmentation' in results:
        return '2'
    if data == 'ADE20K':
        return '8' if 'VMamba-B' in architecture else '1'
    return '-'


def task_name(model: dict) -> str:
    """'UPerNet ADE20K', 'Mask R-CNN COCO', ... of a metafile model."""
    parts = [a for a in model['Metadata'].get('Architecture', [])[1:]
             if a != 'FPN']
    return f"{' '.join(parts)} {model['Metadata'].get('Training Data', '')}"


def model_row(model: dict) -> dict:
    """Where a metafile model sits in the paper: its table, method
    (``In Collection``), backbone, task, config, data set, # P scope and
    the paper's # P in millions (None where it prints none)."""
    paper = model['Metadata'].get('Trainable Parameters')
    return dict(
        table=paper_table(model),
        method=model['In Collection'],
        backbone=model['Metadata']['Architecture'][0],
        task=task_name(model),
        config=model['Config'],
        data=model['Metadata'].get('Training Data'),
        scope=paper_scope(model),
        paper_m=None if paper is None else parse_millions(paper))


def _index(values, value):
    return values.index(value) if value in values else len(values)


def paper_order(row: dict) -> tuple:
    """Sort key of :func:`model_row` dicts: the paper's tables, then task,
    backbone and method in the paper's order."""
    table = row['table']
    return (int(table[:-1]) if table[-1:].isalpha() else
            int(table) if table.isdigit() else 99, table, row['task'],
            _index(BACKBONES, row['backbone']),
            _index(paper_methods(), row['method']), row['method'])


def table_layout(rows: list) -> tuple:
    """(``'backbone'`` or ``'data'``, columns, methods) of one paper table's
    :func:`model_row` dicts: a column per backbone, or per data set when
    one backbone runs on several; both and the methods in the paper's
    order."""
    by = 'data' if len({r['backbone'] for r in rows}) == 1 and \
        len({r['data'] for r in rows}) > 1 else 'backbone'
    order = DATASETS if by == 'data' else BACKBONES
    columns = sorted(dict.fromkeys(r[by] for r in rows),
                     key=lambda c: _index(order, c))
    order = paper_methods()
    methods = sorted(dict.fromkeys(r['method'] for r in rows),
                     key=lambda m: _index(order, m))
    return by, columns, methods
