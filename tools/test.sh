#!/usr/bin/env bash
# Single-process evaluation.
#   tools/test.sh CONFIG CHECKPOINT [test.py args]
# PYTHON selects the interpreter (default: the project's .venv, else python3
# from PATH; see tools/_python.sh).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG CHECKPOINT [test.py args]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
shift 2
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/_python.sh
source "$TOOLS_DIR/_python.sh"
choose_python "$(basename "$0")"

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher none "$@"
