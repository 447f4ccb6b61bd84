"""What a new user meets first: the launcher scripts find the environment
that tools/install.sh built, count_params.py counts a user's own config, and
the batch size a CPU run of UperNet needs."""
import json
import os
import os.path as osp
import shutil
import socket
import stat
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

import mmparax  # noqa: F401  (registers the mmparax scope)
from mmparax.apis.trusted_loading import TRUST_ENV

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
VENV_PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
SCRIPTS = ['dist_train.sh', 'dist_test.sh', 'test.sh', 'slurm_train.sh',
           'slurm_test.sh']
# arguments that pass each script's usage check
ARGS = {
    'dist_train.sh': ['c.py', '1'],
    'dist_test.sh': ['c.py', 'w.pth', '1'],
    'test.sh': ['c.py', 'w.pth'],
    'slurm_train.sh': ['p', 'j', 'c.py', 'wd'],
    'slurm_test.sh': ['p', 'j', 'c.py', 'w.pth'],
}
SWIN_B = osp.join(REPO, 'configs', 'parax',
                  'parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py')
TINY_CFG = osp.join(REPO, 'tests', 'configs',
                    'tiny_parax_swin_upernet_ade20k.py')

# -- the launcher scripts choose their interpreter ---------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def stub_bin(tmp_path):
    """A folder whose python3 and python lack torch, like a system python."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    stub = ('#!/bin/sh\n'
            'case "$*" in *"import torch"*)\n'
            '  echo "ModuleNotFoundError: No module named \'torch\'" >&2\n'
            '  exit 1;;\n'
            'esac\n'
            'echo "stub python $*"\n')
    for name in ('python3', 'python'):
        _executable(folder / name, stub)
    return folder


def _env(stub_bin=None, **extra):
    env = dict(os.environ)
    env.pop(TRUST_ENV, None)
    env.pop('PYTHON', None)
    env.pop('MMPARAX_VENV', None)
    if stub_bin is not None:
        env['PATH'] = f'{stub_bin}{os.pathsep}{env["PATH"]}'
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


def _run(script, args, env, cwd, tools=TOOLS):
    return subprocess.run(['bash', osp.join(tools, script), *args],
                          cwd=str(cwd),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=120)


def _choice_lines(proc, script):
    return [
        line for line in proc.stderr.splitlines()
        if line.startswith(f'{script}: using Python ')
    ]


needs_venv = pytest.mark.skipif(
    not os.access(VENV_PYTHON, os.X_OK),
    reason='checks the .venv that tools/install.sh builds; there is none')


@pytest.mark.e2e
@needs_venv
@pytest.mark.parametrize('script, args, usage', [
    ('test.sh', ['no_such_config.py', 'no.pth', '--help'], 'usage: test.py'),
    ('dist_train.sh', ['no_such_config.py', '1', '--help'],
     'usage: train.py'),
])
def test_scripts_use_the_venv_over_path(stub_bin, tmp_path, script, args,
                                        usage):
    """The README's commands, after its set-up command, with a python on
    PATH that has no torch."""
    proc = _run(script, args, _env(stub_bin, PORT=str(_free_port())),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _choice_lines(proc, script) == [
        f'{script}: using Python {VENV_PYTHON} '
        '(the environment of tools/install.sh)'
    ]
    # the venv's python ran the tool (torchrun included), not the stub
    assert usage in proc.stdout
    assert 'stub python' not in proc.stdout + proc.stderr
    assert 'No module named' not in proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize('script', SCRIPTS)
def test_python_without_torch_stops_with_a_fix(stub_bin, tmp_path, script):
    stub = str(stub_bin / 'python3')
    proc = _run(script, ARGS[script], _env(PYTHON=stub), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ''  # nothing was launched
    lines = proc.stderr.splitlines()
    assert lines[0] == f'{script}: using Python {stub} (from $PYTHON)'
    assert lines[1] == (
        f'{script}: {stub} (from $PYTHON) cannot import torch and mmengine: '
        "ModuleNotFoundError: No module named 'torch'")
    assert 'PYTHON=/path/to/python' in lines[2]
    if os.access(VENV_PYTHON, os.X_OK):
        assert f'unset PYTHON to use {VENV_PYTHON}' in lines[2]
    else:
        assert 'bash tools/install.sh' in lines[2]


@pytest.mark.e2e
def test_missing_interpreter(tmp_path):
    proc = _run('test.sh', ARGS['test.sh'],
                _env(PYTHON=str(tmp_path / 'nowhere' / 'python')),
                cwd=tmp_path)
    assert proc.returncode == 1
    assert "test.sh: the Python interpreter '" in proc.stderr
    assert 'was not found or is not executable' in proc.stderr
    assert 'PYTHON=/path/to/python' in proc.stderr


@pytest.mark.e2e
def test_without_venv_path_python_is_checked(stub_bin, tmp_path):
    """A copy of the scripts with no .venv beside them falls back to
    python3 from PATH, and says what to do when it lacks torch."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in SCRIPTS + ['_python.sh']:
        shutil.copy(osp.join(TOOLS, name), repo / 'tools' / name)
    proc = _run('dist_train.sh', ARGS['dist_train.sh'], _env(stub_bin),
                cwd=tmp_path, tools=str(repo / 'tools'))
    assert proc.returncode == 1
    origin = f'python3 from PATH; {repo}/.venv/bin/python does not exist'
    lines = proc.stderr.splitlines()
    assert lines[0] == (f'dist_train.sh: using Python {stub_bin}/python3 '
                        f'({origin})')
    assert lines[1].startswith(
        f'dist_train.sh: {stub_bin}/python3 ({origin}) cannot import torch')
    assert f"run 'bash tools/install.sh' in {repo}" in lines[2]


@pytest.mark.e2e
def test_mmparax_venv_is_the_venv(stub_bin, tmp_path):
    """MMPARAX_VENV (where tools/install.sh put the venv) is used like the
    default .venv; a recorder stands in for its python."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    python = _executable(
        venv / 'bin' / 'python',
        '#!/bin/sh\necho "venv python $*"\n')
    proc = _run('test.sh', ['c.py', 'w.pth'],
                _env(stub_bin, MMPARAX_VENV=str(venv)),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _choice_lines(proc, 'test.sh') == [
        f'test.sh: using Python {python} (the environment of '
        'tools/install.sh)'
    ]
    assert proc.stdout.splitlines() == [
        f'venv python {TOOLS}/test.py c.py w.pth --launcher none'
    ]


# -- count_params.py on a user's config --------------------------------------


@pytest.fixture(scope='module')
def hidden_64_config(tmp_path_factory):
    """A config outside the repository that inherits the Swin-B recipe
    (absolute _base_) and changes the hidden_dim."""
    path = tmp_path_factory.mktemp('my_configs') / 'my_swin-b_hidden64.py'
    path.write_text(f'_base_ = [{SWIN_B!r}]\n'
                    'model = dict(backbone=dict(peft=dict(hidden_dim=64)))\n')
    return str(path)


@pytest.fixture(scope='module')
def hidden_64_backbone(hidden_64_config):
    cfg = Config.fromfile(hidden_64_config)
    assert cfg.model.backbone.peft.hidden_dim == 64
    init_default_scope('mmseg')
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.init_cfg = None
    backbone = MODELS.build(backbone_cfg)
    return dict(
        trainable=sum(p.numel() for p in backbone.parameters()
                      if p.requires_grad),
        total=sum(p.numel() for p in backbone.parameters()))


@pytest.mark.e2e
def test_count_params_user_config_json(hidden_64_config, hidden_64_backbone,
                                       tmp_path):
    proc = subprocess.run([
        sys.executable,
        osp.join(TOOLS, 'analysis', 'count_params.py'), hidden_64_config,
        '--json', '--paper'
    ],
                          cwd=str(tmp_path),
                          env=_env(),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result['trainable_backbone'] == hidden_64_backbone['trainable']
    assert result['total_backbone'] == hidden_64_backbone['total']
    # not the count of the hidden_dim=128 recipe
    assert result['trainable_backbone'] != 5_242_992
    assert sum(c['trainable'] for c in result['components'].values()) \
        == hidden_64_backbone['trainable']
    assert result['components']['pretrained'] == dict(
        trainable=0, total=86_741_176)  # Swin-B's frozen weights
    assert result['paper_trainable_backbone_m'] is None
    assert result['difference_m'] is None
    reason = result['paper_reason']
    assert reason.startswith('no paper figure is recorded for '
                             'my_swin-b_hidden64.py')
    assert ('it inherits parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py, '
            'whose paper # P is 5.2M') in reason


@pytest.mark.e2e
def test_count_params_user_config_text(hidden_64_config, hidden_64_backbone,
                                       capsys):
    sys.path.insert(0, osp.join(TOOLS, 'analysis'))
    try:
        import count_params
    finally:
        sys.path.pop(0)
    count_params.main([hidden_64_config, '--paper'])
    lines = capsys.readouterr().out.splitlines()
    trainable = hidden_64_backbone['trainable']
    assert f'trainable backbone: {trainable:,} ' \
        f'({trainable / 1e6:.2f}M)' in lines
    assert lines[-1].startswith(
        'paper # P:          no paper figure is recorded for '
        'my_swin-b_hidden64.py: no metafile.yml in its folder lists it')


# -- batch 1 per process on the CPU -------------------------------------------


@pytest.mark.parametrize('batch', [1, 2])
def test_uperhead_needs_two_images_per_batchnorm(batch):
    """Where SyncBN is plain BN (one process, or gloo on the CPU), the 1x1
    pooling branch of UperHead sees one value per channel per image: batch
    1 cannot train, batch 2 can. The recipe is unchanged; the README says
    so."""
    cfg = Config.fromfile(TINY_CFG)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert 1 in cfg.model.decode_head.pool_scales
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    feats = model.extract_feat(torch.randn(batch, 3, 64, 64))
    if batch == 1:
        with pytest.raises(ValueError,
                           match='Expected more than 1 value per channel '
                           r'when training, got input size '
                           r'torch.Size\(\[1, 16, 1, 1\]\)'):
            model.decode_head(feats)
    else:
        assert model.decode_head(feats).shape == (2, 150, 16, 16)
