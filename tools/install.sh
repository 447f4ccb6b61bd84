#!/usr/bin/env bash
# Build a working mmparax environment from nothing.
#
#   bash tools/install.sh              # creates ./.venv with torch, mmcv (compiled ops), mmseg, mmdet,
#                                      # mmpretrain, timm and mmparax (editable)
#
# Environment variables:
#   MMPARAX_VENV=DIR     where to create the virtual environment (default: <repo>/.venv)
#   MMPARAX_PYTHON=PY    install into the environment of this existing interpreter instead of a venv
#                        (e.g. a conda env that already has a CUDA torch)
#   MMPARAX_TORCH=SPEC   pip requirement(s) for torch (default: "torch==2.14.1 torchvision==0.29.1");
#                        "keep" uses the torch already installed in the target environment
#   MMCV_WHEEL_DIRS=...  colon-separated folders searched for a prebuilt mmcv 2.1.0 wheel matching the
#                        torch in use (default: ../shared/wheels next to the repo, if present)
#
# mmcv 2.1.0 ships only as source on PyPI. Its setup.py forces -std=c++17, which torch >= 2.14
# refuses ("C++20 or later compatible compiler is required"). For such torch versions this script
# builds mmcv from the PyPI sdist with that flag raised to -std=c++20, and says so. The built wheel is
# kept in <repo>/.cache/mmcv/<torch-tag>/ so a rebuilt environment with the same torch reuses it and one
# with another torch never does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

if [[ -n "${MMPARAX_PYTHON:-}" ]]; then
  PY=$MMPARAX_PYTHON
  say "using the existing interpreter $PY"
else
  VENV=${MMPARAX_VENV:-$ROOT/.venv}
  if [[ ! -x $VENV/bin/python ]]; then
    say "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  PY=$VENV/bin/python
fi
# (the grep drops pip's notes about index folders that do not exist on a machine)
pip_() {
  "$PY" -m pip install --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

pip_ -q --upgrade pip
# mmcv's setup.py imports pkg_resources, removed in setuptools 82.
pip_ -q "setuptools<82" wheel ninja

TORCH_SPEC=${MMPARAX_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
if [[ $TORCH_SPEC == keep ]]; then
  "$PY" -c "import torch, torchvision" || { echo "MMPARAX_TORCH=keep but torch/torchvision do not import in $PY" >&2; exit 1; }
else
  say "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  pip_ -q $TORCH_SPEC
fi
TORCH_TAG=$("$PY" -c "import torch,sys; c=torch.version.cuda if torch.cuda.is_available() else None; print(f'torch{torch.__version__.split(\"+\")[0]}-{\"cu\"+c.replace(\".\",\"\") if c else \"cpuops\"}-cp{sys.version_info[0]}{sys.version_info[1]}')")
say "torch: $TORCH_TAG"

mmcv_ok() { "$PY" - <<'PY' 2>/dev/null
import mmcv, torch
from mmcv.ops import nms
assert mmcv.__version__ == '2.1.0'
b = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]); s = torch.tensor([0.9, 0.8])
nms(b, s, 0.5)
PY
}

if mmcv_ok; then
  say "mmcv 2.1.0 with compiled ops already works"
else
  CACHE=$ROOT/.cache/mmcv/$TORCH_TAG
  mkdir -p "$CACHE"
  WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z $WHEEL && $TORCH_TAG == torch2.14.1-cpuops-cp311 ]]; then
    # A prebuilt wheel is only a cache: it must have been built against this exact torch, CPU ops.
    IFS=: read -r -a dirs <<< "${MMCV_WHEEL_DIRS:-$ROOT/../shared/wheels}"
    for d in "${dirs[@]}"; do
      if [[ -f $d/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl ]]; then
        WHEEL=$d/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl
        say "using the prebuilt mmcv wheel $WHEEL (built against torch 2.14.1, CPU ops)"
        break
      fi
    done
  fi
  if [[ -z $WHEEL ]]; then
    say "building mmcv 2.1.0 from the PyPI source (about 10-20 minutes on 2 cores; CUDA ops too if a GPU is visible)"
    BUILD=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==2.1.0" -d "$BUILD" \
      2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
    if "$PY" -c "import torch,sys; v=tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(0 if v >= (2, 14) else 1)"; then
      say "torch >= 2.14 needs C++20: raising mmcv's hard-coded -std=c++17 to -std=c++20 in the unpacked setup.py"
      sed -i 's/-std=c++17/-std=c++20/g' "$BUILD"/mmcv-2.1.0/setup.py
      grep -q 'std=c++20' "$BUILD"/mmcv-2.1.0/setup.py || { echo "could not patch mmcv setup.py" >&2; exit 1; }
    fi
    (cd "$BUILD"/mmcv-2.1.0 && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir -w "$CACHE" . )
    rm -rf "$BUILD"
    WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n1)
  fi
  pip_ -q "$WHEEL" -r "$ROOT/requirements/runtime.txt"
  mmcv_ok || { echo "mmcv 2.1.0 installed from $WHEEL but its compiled ops do not work" >&2; exit 1; }
fi

say "installing the OpenMMLab stack and mmparax"
pip_ -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
pip_ -q --no-deps -e "$ROOT"
"$PY" -c "import mmparax, mmseg, mmdet, mmpretrain, timm, mmcv; print('mmparax', mmparax.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| mmdet', mmdet.__version__, '| mmpretrain', mmpretrain.__version__, '| timm', timm.__version__)"
say "done: $PY"
