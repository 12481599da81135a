#!/usr/bin/env bash
# scripts/gpu_check.sh as it runs on the GPU machines, without a GPU: a fresh virtual environment
# with what those machines have (NumPy, pytest, numba, h5py, scipy, matplotlib, and mpi4py without
# an MPI library; no mpich, Hydra, array-api-compat or MLflow), ddl's other dependencies fetched as
# wheels (--fetch-wheels, for this Python), then `--dry-run --wheels`: every step must PASS, both
# 2-rank steps included. CI runs it (.ci/run); it needs a package registry for the set-up only.
#   bash scripts/gpu_check_mirror.sh [DIR]      (DIR: where the venv, wheels and table go)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$(mktemp -d /tmp/ddl-gpu-mirror.XXXXXX)}
python3 -m venv "$dir/venv"
py="$dir/venv/bin/python"
"$py" -m pip install -q numpy pytest numba h5py scipy matplotlib mpi4py
if "$py" -c "from mpi4py import MPI" 2>/dev/null; then
    echo "gpu_check_mirror: this venv's mpi4py found an MPI library; the GPU machines have none" >&2
    exit 1
fi
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHON="$py" bash "$repo/scripts/gpu_check.sh" --fetch-wheels "$dir/wheels" --python-version "$version" >/dev/null
PYTHON="$py" bash "$repo/scripts/gpu_check.sh" --dry-run --wheels "$dir/wheels" --out "$dir/out"
rows=$(grep -cE '^\| [a-z0-9-]+ +\| PASS ' "$dir/out/table.md")
if grep -qE '^\| [a-z0-9-]+ +\| (FAIL|SKIP) ' "$dir/out/table.md" || [ "$rows" -ne 7 ]; then
    echo "gpu_check_mirror: not every step passed ($rows of 7):" >&2
    cat "$dir/out/table.md" >&2
    exit 1
fi
echo "gpu_check_mirror: all 7 steps passed, as on a GPU machine without one"
