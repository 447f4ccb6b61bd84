#!/usr/bin/env bash
# Single-process evaluation.
#   tools/test.sh CONFIG CHECKPOINT [test.py args]
# PYTHON selects the interpreter (default: python of the current environment).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG CHECKPOINT [test.py args]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
shift 2
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher none "$@"
