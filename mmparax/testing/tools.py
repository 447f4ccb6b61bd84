"""Running the repository's ``tools/`` scripts from tests and demos."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

from mmparax.apis.trusted_loading import TRUST_ENV

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_tool(script: str, *args, cwd, env: dict = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` with this interpreter and return the process.

    The run starts from the caller's environment without the user's trusted
    checkpoints (``MMPARAX_TRUSTED_CHECKPOINTS``), plus ``env``; output is
    captured as text.
    """
    full_env = dict(os.environ)
    full_env.pop(TRUST_ENV, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', script), *map(str, args)],
        cwd=str(cwd),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout)


def load_tool(script: str):
    """``tools/<script>`` imported as a module (its ``main(argv)`` then runs
    in this process)."""
    name = 'mmparax_tools_' + osp.splitext(script)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_ok(proc: subprocess.CompletedProcess) -> None:
    """Assert that a :func:`run_tool` process succeeded; show its output
    tails otherwise."""
    assert proc.returncode == 0, (
        f'exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
        f'--- stderr\n{proc.stderr[-6000:]}')
