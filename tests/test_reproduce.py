"""``tools/reproduce.py``: plans from the real metafiles, and a small table
(tiny Swin UperNets with ParaX, LoRA and AdaptFormer, plus a run that fails)
run end to end as a user would: locally, killed with ``kill -9`` and run
again, through Slurm stand-ins, with 2 gloo processes; then gathered."""
import contextlib
import importlib.util
import io
import json
import math
import os
import os.path as osp
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml
from PIL import Image

from mmparax.apis.trusted_loading import TRUST_ENV
from mmparax.testing import short_demo_config
from mmparax.utils import reproduce
from mmparax.utils.paper import metafile_models, parse_millions

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools', 'reproduce.py')
ITERS, INTERVAL = 12, 4
ENV = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')

# the short demo recipe with a method, no validation (the run's evaluation is
# its test) and no data worker
CONFIG = """\
_base_ = ['short_demo.py']
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
val_dataloader = val_cfg = val_evaluator = None
model = dict(backbone=dict(peft={peft}))
default_hooks = dict(logger=dict(interval=2), checkpoint=dict(save_best=None))
"""
METHODS = {
    'ParaX': "dict(type='ParaX', hidden_dim=4, kernel_sizes=(3, ), "
    'router_hidden=4)',
    'LoRA': "dict(_delete_=True, type='LoRA', rank=4, targets=['qkv:qv'])",
    'AdaptFormer': "dict(_delete_=True, type='AdaptFormer', hidden_dim=8, "
    'scale=0.1)',
    'Mona': "dict(_delete_=True, type='Mona', hidden_dim=8)",
}
FOLDER = {'ParaX': 'parax', 'LoRA': 'lora', 'AdaptFormer': 'adaptformer',
          'Mona': 'mona'}


def paper_entry(method):
    """The real metafile entry of ``method``'s Swin-B ADE20K row."""
    name = f'{FOLDER[method]}_swin-b_upernet_8xb2-160k_ade20k-512x512'
    path = osp.join(REPO, 'configs', FOLDER[method], 'metafile.yml')
    return next(m for m in metafile_models(path) if m['Name'] == name)


def tiny_entry(method, config, name=None):
    """A metafile entry for a tiny config that carries the paper's figures
    of ``method``'s Swin-B ADE20K row."""
    entry = paper_entry(method)
    return dict(entry, Name=name or osp.splitext(osp.basename(config))[0],
                Config=str(config),
                Metadata=dict(entry['Metadata'],
                              **{'Training Resources': '1x CPU',
                                 'Architecture': ['tiny Swin', 'UPerNet']}))


def write_metafile(path, entries):
    path.write_text(yaml.safe_dump(dict(Models=entries), sort_keys=False))
    return str(path)


def run_tool(*args, env=None, timeout=600):
    full = dict(os.environ, **ENV)
    full.pop(TRUST_ENV, None)
    full.update(env or {})
    return subprocess.run([sys.executable, TOOL, *map(str, args)],
                          cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=timeout)


def tool_main(*args):
    """``tools/reproduce.py ARGS`` in this process: (exit code, stdout,
    stderr)."""
    spec = importlib.util.spec_from_file_location('reproduce_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(),
                                       err.getvalue())


def check_ok(proc, code=0):
    assert proc.returncode == code, (
        f'exit {proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}\n'
        f'--- stderr\n{proc.stderr[-5000:]}')
    return proc.stdout


def result(work_dir):
    with open(osp.join(work_dir, 'metrics.json')) as f:
        return json.load(f)


# -- plans and tables of the real metafiles -----------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize('table,count', [('1', 36), ('10', 18)])
def test_dry_run_lists_every_row_of_a_table(tmp_path, table, count):
    out = check_ok(tool_main('--table', table, '--dry-run', '--work-root',
                             tmp_path / 'empty'))
    lines = out.strip().splitlines()
    assert lines[-1] == f'{count} runs: {count} new'
    runs = lines[:-1]
    assert len(runs) == count
    configs = [line.split()[3] for line in runs]
    assert len(set(configs)) == count
    assert all(osp.isfile(osp.join(REPO, c)) for c in configs)
    assert all(re.match(r'new +8 GPU +configs/\S+\.py +\S+$', line)
               for line in runs)
    assert not (tmp_path / 'empty').exists()


@pytest.mark.e2e
def test_gather_of_an_empty_root_prints_the_papers_figures(tmp_path):
    out = check_ok(tool_main('gather', '--table', '1', '--work-root',
                             tmp_path))
    parax = paper_entry('ParaX')
    miou = parax['Results'][0]['Metrics']['mIoU']
    row = next(line for line in out.splitlines()
               if line.startswith('| ParaX |'))
    cells = row.strip('|').split('|')
    assert cells[1].strip() == \
        f"{parse_millions(parax['Metadata']['Trainable Parameters']):.1f}"
    assert cells[2].strip() == f'missing / {miou:.1f}'
    body = [line for line in out.splitlines() if line.startswith('| ')][1:]
    assert len(body) == 10  # the ten methods of Table 1
    for line in body:
        for cell in line.strip('|').split('|')[2::2]:
            assert cell.strip() == '-' or cell.strip().startswith('missing / ')


@pytest.mark.e2e
def test_selection_errors_name_the_problem(tmp_path):
    proc = tool_main('--table', '99', '--dry-run', '--work-root', tmp_path)
    assert proc.returncode == 2
    assert 'no metafile model matches' in proc.stderr
    assert "--table ['99']" in proc.stderr and '10' in proc.stderr
    proc = tool_main('--launcher', 'slurm', '--table', '1', '--work-root',
                     tmp_path)
    assert proc.returncode == 2 and '--partition' in proc.stderr


@pytest.mark.slow
def test_seeds_plan_apart_and_gather_mean_and_spread(tmp_path):
    models = reproduce.select_models(tables=['1'], methods=['ParaX'],
                                     backbones=['Swin-B'])
    runs = reproduce.plan_runs(models, tmp_path, seeds=[0, 1, 2])
    assert [osp.relpath(r.work_dir, tmp_path) for r in runs] == [
        f'{models[0]["Name"]}/seed{s}' for s in (0, 1, 2)]
    assert runs[1].options() == ['randomness.seed=1']
    assert reproduce.plan_runs(models, tmp_path, [3], cfg_options=[
        'a=1'])[0].options() == ['a=1', 'randomness.seed=3']
    paper = reproduce.paper_metric(models[0], 'mIoU')
    commit = reproduce.git_commit()['code_commit']
    for run, value in zip(runs, (paper - 1, paper + 0.5, paper + 1.1)):
        os.makedirs(run.work_dir)
        options = reproduce.parse_options(run.options())
        reproduce.write_json(osp.join(run.work_dir, 'metrics.json'), dict(
            metrics={'mIoU': value}, code_commit=commit, cfg_options=options,
            config=dict(path=run.config, sha256=reproduce.config_sha256(
                run.config, options))))
    entry, = reproduce.gather(runs)
    cell = entry['metrics']['mIoU']
    assert entry['mark'] == 'done'
    assert cell['mean'] == pytest.approx(paper + 0.2)
    assert cell['std'] == pytest.approx(math.sqrt((1.2**2 + 0.3**2 + 0.9**2) /
                                                  2))
    assert cell['inside'] is True
    assert reproduce.cell_text(entry, 'mIoU') == \
        f'{paper + 0.2:.2f} ± 1.08 / {paper:.1f} (+0.20, paper inside)'
    # a result of other mmparax code is stale
    with open(osp.join(runs[0].work_dir, 'metrics.json')) as f:
        old = json.load(f)
    reproduce.write_json(osp.join(runs[0].work_dir, 'metrics.json'),
                         dict(old, code_commit='0' * 40))
    entry, = reproduce.gather(runs)
    assert entry['mark'] == 'stale'
    assert entry['runs'][0]['stale'] == [
        f'mmparax code of commit 0000000000 (now {commit[:10]})']


# -- a small table, end to end ------------------------------------------------


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Data, a tiny Microsoft-layout Swin checkpoint, four tiny configs
    (the last one reads a data set that does not exist) and their
    metafile."""
    root = tmp_path_factory.mktemp('reproduce')
    short_demo_config(str(root), total=ITERS, interval=INTERVAL,
                      num_train=8)
    configs = {}
    for method, peft in METHODS.items():
        path = root / f'{FOLDER[method]}_tiny-swin_upernet.py'
        text = CONFIG.format(peft=peft)
        if method == 'Mona':
            text += f"train_dataloader.update(dataset=dict(data_root=" \
                f"{str(root / 'nowhere')!r}))\n"
        path.write_text(text)
        configs[method] = path
    metafile = write_metafile(root / 'metafile.yml', [
        tiny_entry(method, path) for method, path in configs.items()])
    return dict(root=root, configs=configs, metafile=metafile)


def names(tiny):
    return {m: osp.splitext(p.name)[0] for m, p in tiny['configs'].items()}


@pytest.fixture(scope='module')
def local_table(tiny):
    """The table run locally, ParaX killed with kill -9 once it has
    written a checkpoint, then the same command again."""
    work_root = tiny['root'] / 'local'
    args = [TOOL, '--metafile', tiny['metafile'], '--method', 'ParaX',
            'LoRA', 'AdaptFormer', '--work-root', work_root]
    parax_dir = work_root / names(tiny)['ParaX']
    env = dict(os.environ, **ENV)
    env.pop(TRUST_ENV, None)
    with open(tiny['root'] / 'killed.log', 'w') as out:
        proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO,
                                env=env, stdout=out,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 400
        while (proc.poll() is None and time.time() < deadline
               and not (parax_dir / 'last_checkpoint').exists()):
            time.sleep(0.05)
        if proc.poll() is None:  # the command and its training
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = (tiny['root'] / 'killed.log').read_text()
    assert proc.returncode == -signal.SIGKILL, first[-5000:]
    before = tool_main(*args[1:], '--dry-run')
    finished = {m: (work_root / n / 'metrics.json').read_bytes()
                for m, n in names(tiny).items() if m in ('LoRA',
                                                         'AdaptFormer')}
    again = run_tool(*args[1:])
    return dict(work_root=work_root, first=first, before=before,
                again=again, finished=finished)


@pytest.mark.e2e
def test_killed_run_resumes_and_only_it(tiny, local_table):
    n = names(tiny)
    first = local_table['first']
    assert f"{n['LoRA']}: done" in first and f"{n['AdaptFormer']}: done" \
        in first
    plan = check_ok(local_table['before'])
    states = {line.split()[-1]: line for line in plan.splitlines()[:-1]}
    assert states[str(local_table['work_root'] / n['ParaX'])].startswith(
        'partial: iter ')
    assert re.match(rf'partial: iter \d+/{ITERS} ', states[str(
        local_table['work_root'] / n['ParaX'])])
    assert states[str(local_table['work_root'] / n['LoRA'])].startswith(
        'done ')
    assert plan.splitlines()[-1] == '3 runs: 2 done, 1 partial'

    again = check_ok(local_table['again'])
    assert f"{n['LoRA']}: done, skipped" in again
    assert f"{n['AdaptFormer']}: done, skipped" in again
    assert re.search(rf"{n['ParaX']}: resuming from \S+/iter_\d+\.pth", again)
    assert f"{n['ParaX']}: done" in again
    for method, content in local_table['finished'].items():
        assert (local_table['work_root'] / n[method] /
                'metrics.json').read_bytes() == content
    log = (local_table['work_root'] / n['ParaX'] /
           'reproduce_train.log').read_text()
    resumed = re.search(r'resumed epoch: \d+, iter: (\d+)', log)
    assert resumed and INTERVAL <= int(resumed.group(1)) < ITERS
    assert 'RNGStateHook: restored the RNG states' in log

    parax = result(local_table['work_root'] / n['ParaX'])
    launches = parax['train']['launches']
    assert [bool(launch['resumed_from']) for launch in launches] == [False,
                                                                     True]
    assert parax['checkpoint']['path'].endswith(f'iter_{ITERS}.pth')
    assert parax['config'] == dict(
        path=str(tiny['configs']['ParaX']),
        sha256=reproduce.config_sha256(str(tiny['configs']['ParaX'])))
    assert launches[0]['config_sha256'] == parax['config']['sha256']
    commit = reproduce.git_commit()
    assert parax['commit'] == commit['commit']
    assert parax['code_commit'] == commit['code_commit']
    assert set(parax['versions']) == set(reproduce.PACKAGES)
    assert all(parax['versions'].values())
    assert parax['seed'] == 0 and parax['world_size'] == 1
    assert parax['devices'][0].startswith(('cpu', 'NVIDIA'))
    assert parax['wall_time_s'] > 0 and parax['train']['wall_time_s'] > 0
    assert 0 < parax['metrics']['mIoU'] <= 100


def stand_ins(folder):
    """An ``srun`` that records its arguments and runs the job's tasks
    here, as Slurm would set them up."""
    folder.mkdir()
    srun = folder / 'srun'
    srun.write_text(f"""#!{sys.executable}
import os, socket, subprocess, sys
with open(os.environ['SRUN_RECORD'], 'a') as f:
    f.write(' '.join(sys.argv[1:]) + '\\n')
args, ntasks = sys.argv[1:], 1
while args[0].startswith('-'):
    option = args.pop(0)
    if option.startswith('--ntasks='):
        ntasks = int(option.split('=')[1])
    if option in ('-p', '-J', '-n'):
        args.pop(0)
with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = str(s.getsockname()[1])
tasks = [subprocess.Popen(args, env=dict(
    os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
    SLURM_NTASKS=str(ntasks), SLURM_NODELIST='localhost',
    MASTER_ADDR='127.0.0.1', MASTER_PORT=port)) for i in range(ntasks)]
sys.exit(max(t.wait() for t in tasks))
""")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.fixture(scope='module')
def slurm_parax(tiny):
    """ParaX and the run that fails, through tools/slurm_train.sh and
    slurm_test.sh."""
    work_root = tiny['root'] / 'slurm'
    bin_dir = stand_ins(tiny['root'] / 'bin')
    record = tiny['root'] / 'srun.txt'
    proc = run_tool('--metafile', tiny['metafile'], '--method', 'ParaX',
                    'Mona', '--work-root', work_root, '--launcher', 'slurm',
                    '--partition', 'debug', '--max-jobs', '2',
                    env=dict(PATH=f"{bin_dir}:{os.environ['PATH']}",
                             SRUN_RECORD=str(record)))
    return dict(work_root=work_root, proc=proc, record=record)


@pytest.mark.e2e
def test_slurm_path_and_resumed_equals_uninterrupted(tiny, local_table,
                                                     slurm_parax):
    # a failure is reported with its log, the other run goes on
    out = check_ok(slurm_parax['proc'], code=1)
    name, mona = names(tiny)['ParaX'], names(tiny)['Mona']
    mona_log = slurm_parax['work_root'] / mona / 'reproduce_train.log'
    assert f'{mona}: FAILED in train (exit 1): {mona_log}' in out
    assert 'FileNotFoundError' in mona_log.read_text()
    assert out.splitlines()[-1] == '2 runs: 1 failed, 1 done'
    assert f'{name}: done' in out
    calls = [c for c in slurm_parax['record'].read_text().splitlines()
             if f'--job-name={name} ' in c]
    assert len(calls) == 2
    for call, script in zip(calls, ('train.py', 'test.py')):
        assert call.startswith(f'-p debug --job-name={name} --gres=gpu:1 '
                               '--ntasks=1 --ntasks-per-node=1 ')
        assert f'tools/{script} {tiny["configs"]["ParaX"]}' in call
        assert '--launcher=slurm' in call
    uninterrupted = result(slurm_parax['work_root'] / name)
    resumed = result(local_table['work_root'] / name)
    assert uninterrupted['train']['launches'][0]['launcher'] == 'slurm'
    assert len(uninterrupted['train']['launches']) == 1
    assert resumed['metrics'] == uninterrupted['metrics']

    tables = {}
    for key, table in (('resumed', local_table), ('straight', slurm_parax)):
        out = check_ok(tool_main('gather', '--metafile', tiny['metafile'],
                                 '--method', 'ParaX', '--work-root',
                                 table['work_root']))
        tables[key] = [line for line in out.splitlines()
                       if line.startswith('| ParaX |')]
    assert tables['resumed'] == tables['straight']
    assert f"{resumed['metrics']['mIoU']:.2f} / " in tables['resumed'][0]


@pytest.mark.e2e
def test_two_gloo_processes(tiny):
    work_root = tiny['root'] / 'dist'
    out = check_ok(run_tool('--metafile', tiny['metafile'], '--method',
                            'LoRA', '--gpus', '2', '--work-root', work_root,
                            '--cfg-options', 'train_cfg.max_iters=4'))
    name = names(tiny)['LoRA']
    assert re.search(rf'1 run: 1 new\n.*{name}: training', out)
    log = (work_root / name / 'reproduce_train.log').read_text()
    assert 'tools/dist_train.sh' in log and 'Iter(train) [4/4]' in log
    metrics = result(work_root / name)
    assert metrics['cfg_options'] == {'train_cfg.max_iters': 4}
    assert metrics['checkpoint']['path'].endswith('iter_4.pth')
    assert metrics['world_size'] == 2 and len(metrics['devices']) == 2
    assert 'tools/dist_test.sh' in (work_root / name /
                                    'reproduce_test.log').read_text()


@pytest.mark.e2e
def test_gather_marks_and_outputs(tiny, local_table, slurm_parax, tmp_path):
    n = names(tiny)
    work_root = tmp_path / 'work'
    shutil.copytree(local_table['work_root'], work_root)
    shutil.copytree(slurm_parax['work_root'] / n['Mona'],
                    work_root / n['Mona'])
    # the LoRA config changes after its run: the same recipe file, edited
    changed = tiny['configs']['LoRA'].with_name('lora_edited.py')
    changed.write_text(tiny['configs']['LoRA'].read_text().replace(
        'interval=2', 'interval=3'))
    metafile = write_metafile(tmp_path / 'metafile.yml', [
        tiny_entry('ParaX', tiny['configs']['ParaX']),
        tiny_entry('LoRA', changed, name=n['LoRA']),
        tiny_entry('AdaptFormer', tiny['configs']['AdaptFormer'],
                   name='adaptformer_never_run'),
        tiny_entry('Mona', tiny['configs']['Mona']),
    ])
    out_dir = tmp_path / 'tables'
    out = check_ok(tool_main('gather', '--metafile', metafile,
                             '--work-root', work_root, '--out-dir', out_dir))
    rows = {line.split('|')[1].strip(): line.split('|')[3].strip()
            for line in out.splitlines() if line.startswith('| ')}
    paper = {m: paper_entry(m)['Results'][0]['Metrics']['mIoU']
             for m in METHODS}
    parax = result(work_root / n['ParaX'])['metrics']['mIoU']
    assert rows['ParaX'] == \
        f"{parax:.2f} / {paper['ParaX']:.1f} ({parax - paper['ParaX']:+.2f})"
    assert rows['LoRA'].endswith(' stale')
    assert f"stale: {n['LoRA']}: the config changed after the run" in out
    assert rows['AdaptFormer'] == f"missing / {paper['AdaptFormer']:.1f}"
    assert rows['Mona'] == f"failed / {paper['Mona']:.1f}"

    table = json.loads((out_dir / 'table.json').read_text())
    marks = {e['method']: e['mark'] for e in table}
    assert marks == dict(ParaX='done', LoRA='stale', AdaptFormer='missing',
                         Mona='failed')
    lora = next(e for e in table if e['method'] == 'LoRA')
    assert lora['runs'][0]['stale'] == ['the config changed after the run']
    csv_lines = (out_dir / 'table.csv').read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith('table,method')
    assert (out_dir / 'table.md').read_text().strip() == out.split(
        '\nwrote ')[0].strip()
    with Image.open(out_dir / 'table.png') as image:
        image.verify()
        assert image.format == 'PNG' and min(image.size) > 100
    shutil.rmtree(out_dir)
