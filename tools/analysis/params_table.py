"""Every config's trainable backbone count beside the paper's # P.

Reads the configs listed by the metafiles (all those ``model-index.yml``
imports, or the folders / metafiles given), builds each backbone on the CPU
without its checkpoint and prints one row per config: the paper's table, the
method, the backbone, the task, the exact trainable count, the count in
millions and the paper's figure (``Trainable Parameters`` of the metafile).
A row matches when both print the same at 0.1M. A metafile entry's
``Trainable Parameters Scope`` says what the paper counted where it is not
the backbone alone: ``model`` (the heads too, Table 7) or ``backbone and a
1000-class head`` (Table 4); the count is taken the same way.

Examples::

    python tools/analysis/params_table.py                  # markdown
    python tools/analysis/params_table.py --format grid    # per paper table
    python tools/analysis/params_table.py --format json
    python tools/analysis/params_table.py configs/lora configs/mona
"""
import argparse
import contextlib
import json
import os.path as osp
import sys

from mmengine.config import Config

import mmparax  # noqa: F401  (registers the mmparax scope)
from mmparax.utils import build_config_model
from mmparax.utils.paper import (
    config_path,
    metafile_models,
    metafiles,
    model_row,
    paper_order,
    scoped_count,
    table_layout,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Trainable backbone counts of the configs beside the "
        "paper's # P")
    parser.add_argument(
        'sources',
        nargs='*',
        help='metafile.yml files or config folders (default: every '
        'metafile model-index.yml imports)')
    parser.add_argument(
        '--format',
        choices=('markdown', 'grid', 'json'),
        default='markdown',
        help="markdown: one row per config; grid: one table per paper "
        "table, methods by backbone (or data set), each cell 'ours / paper' "
        'in millions with the config linked; json: the rows')
    parser.add_argument(
        '--out', help='also write the table to this file')
    return parser.parse_args(argv)


def rows(metafiles):
    """One dict per metafile model, in the order of the paper's tables."""
    out = []
    for metafile in metafiles:
        for model in metafile_models(metafile):
            row = model_row(model)
            cfg = Config.fromfile(config_path(model))
            with contextlib.redirect_stdout(sys.stderr):
                built = build_config_model(
                    cfg, backbone_only=row['scope'] != 'model')
            trainable = scoped_count(row['scope'], built)
            del built
            paper = row['paper_m']
            row.update(
                trainable=trainable,
                ours_m=round(trainable / 1e6, 3),
                match=None if paper is None else
                f'{trainable / 1e6:.1f}' == f'{paper:.1f}')
            out.append(row)
    return sorted(out, key=paper_order)


_MATCH = {True: 'yes', False: 'no', None: '-'}
_SCOPE_MARKS = {
    'backbone': '',
    'model': ' (with heads)',
    'backbone and a 1000-class head': ' (with a 1000-class head)'
}


def _paper(millions):
    return '-' if millions is None else f'{millions:.1f}'


def markdown(table_rows) -> str:
    lines = [
        '| table | method | backbone | task | config | trainable | '
        '# P ours (M) | # P paper (M) | match |',
        '|---|---|---|---|---|---:|---:|---:|---|'
    ]
    for r in table_rows:
        lines.append(
            f"| {r['table']} | {r['method']} | {r['backbone']} | {r['task']} "
            f"| [{osp.basename(r['config'])}]({r['config']}) "
            f"| {r['trainable']:,}{_SCOPE_MARKS[r.get('scope', 'backbone')]} "
            f"| {r['ours_m']:.2f} | {_paper(r['paper_m'])} "
            f"| {_MATCH[r['match']]} |")
    printed = [r for r in table_rows if r['paper_m'] is not None]
    lines.append('')
    lines.append(f"{sum(r['match'] for r in printed)} of {len(printed)} "
                 "rows with a paper # P print it at 0.1M"
                 f'; {len(table_rows) - len(printed)} rows have none.')
    return '\n'.join(lines)


def _cell(row) -> str:
    mark = '' if row['match'] in (True, None) else ' (!)'
    mark = _SCOPE_MARKS[row.get('scope', 'backbone')] + mark
    return (f"[{row['ours_m']:.2f} / {_paper(row['paper_m'])}]"
            f"({row['config']}){mark}")


def grid(table_rows) -> str:
    """One markdown table per paper table: a row per method, a column per
    backbone (per data set when one backbone runs on several); tables whose
    rows a (method, column) pair does not name (ablations) stay flat."""
    tables = {}
    for row in table_rows:
        tables.setdefault(row['table'], []).append(row)
    out = []
    for table, rows_ in tables.items():
        by, columns, methods = table_layout(rows_)
        cells = {(r['method'], r[by]): r for r in rows_}
        tasks = ', '.join(
            dict.fromkeys(r['task'] for c in columns for r in rows_
                          if r[by] == c))
        out.append(f'**Table {table}** ({tasks}): # P ours / paper (M)')
        out.append('')
        if len(cells) < len(rows_):
            out.append(markdown(rows_).rsplit('\n\n', 1)[0])
        else:
            out.append('| method | ' + ' | '.join(columns) + ' |')
            out.append('|---|' + '---|' * len(columns))
            for method in methods:
                out.append(f'| {method} | ' + ' | '.join(
                    _cell(cells[method, c]) if (method, c) in cells else '-'
                    for c in columns) + ' |')
        out.append('')
    printed = [r for r in table_rows if r['paper_m'] is not None]
    out.append(f"{sum(r['match'] for r in printed)} of {len(printed)} rows "
               'with a paper # P print it at 0.1M; (!) marks the others.')
    return '\n'.join(out)


def main(argv=None):
    args = parse_args(argv)
    table_rows = rows(metafiles(args.sources))
    text = dict(json=lambda r: json.dumps(r, indent=1), grid=grid,
                markdown=markdown)[args.format](table_rows)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return table_rows


if __name__ == '__main__':
    main()
