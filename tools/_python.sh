# Choose the Python interpreter of the launcher scripts (sourced, not run).
#
#   source "$TOOLS_DIR/_python.sh"
#   choose_python "$(basename "$0")"    # sets PYTHON or exits
#
# Order: $PYTHON when set; else the virtual environment that
# tools/install.sh builds (${MMPARAX_VENV:-<repository root>/.venv}); else
# python3, then python, from PATH. The choice is printed on one line of
# stderr. An interpreter that cannot import torch and mmengine stops the
# script with a message that names it and says how to fix it.

choose_python() {
    local script=$1
    local root venv origin resolved error fix
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    venv=${MMPARAX_VENV:-$root/.venv}

    if [ -n "${PYTHON:-}" ] && [ -x "$venv/bin/python" ]; then
        fix="unset PYTHON to use $venv/bin/python"
    elif [ -n "${PYTHON:-}" ]; then
        fix="run 'bash tools/install.sh' in $root and unset PYTHON (the"
        fix="$fix scripts then use $venv/bin/python)"
    else
        fix="run 'bash tools/install.sh' in $root (it builds"
        fix="$fix $venv/bin/python, which the scripts then use)"
    fi
    fix="  Fix: $fix, or name an interpreter that has torch and mmengine:"
    fix="$fix PYTHON=/path/to/python bash tools/$script ..."

    if [ -n "${PYTHON:-}" ]; then
        origin='from $PYTHON'
    elif [ -x "$venv/bin/python" ]; then
        PYTHON=$venv/bin/python
        origin='the environment of tools/install.sh'
    elif command -v python3 >/dev/null 2>&1; then
        PYTHON=python3
        origin="python3 from PATH; $venv/bin/python does not exist"
    elif command -v python >/dev/null 2>&1; then
        PYTHON=python
        origin="python from PATH; $venv/bin/python does not exist"
    else
        echo "$script: no Python interpreter: $venv/bin/python does not" \
            "exist and neither python3 nor python is on PATH." >&2
        echo "$fix" >&2
        exit 1
    fi

    if ! resolved=$(command -v "$PYTHON" 2>/dev/null) || [ -z "$resolved" ]
    then
        echo "$script: the Python interpreter '$PYTHON' ($origin) was not" \
            "found or is not executable." >&2
        echo "$fix" >&2
        exit 1
    fi
    echo "$script: using Python $resolved ($origin)" >&2

    if ! error=$("$PYTHON" -c 'import torch, mmengine' 2>&1 >/dev/null)
    then
        error=$(printf '%s\n' "$error" | grep -v '^[[:space:]]*$' \
            | tail -n 1) || true
        echo "$script: $resolved ($origin) cannot import torch and" \
            "mmengine${error:+: $error}" >&2
        echo "$fix" >&2
        exit 1
    fi
}
