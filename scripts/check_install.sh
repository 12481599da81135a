#!/usr/bin/env bash
# The install checks CI runs (.ci/run), each in a fresh virtual environment, from a clean clone:
#   1. wheel: build an sdist and a wheel from it, install the wheel (not editable) and, from a
#      directory outside the checkout, run ddl-train (untracked and tracked), --help, ddl-report;
#   2. the README in order: command 1, command 2's install step, command 1 again in the same
#      directory; the one ./mlflow.db must then hold both default runs.
# Usage: bash scripts/check_install.sh [wheel|readme|all]    (default all; needs PyPI access)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-all}
work=$(mktemp -d /tmp/ddl-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"           # what a user gets: tracked files only
# A commit-less change in the working tree would be missed by the clone: say so rather than pass.
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  echo "check_install: note: uncommitted changes in $repo are not part of this check" >&2
fi

step() { echo; echo "== check_install: $*"; }

fresh_venv() {  # fresh_venv DIR: a new virtual environment with a current pip
  python3 -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip
}

check_wheel() {
  step "wheel from an sdist, installed into a fresh venv, run from outside the checkout"
  fresh_venv "$work/wheel-venv"
  local py="$work/wheel-venv/bin"
  "$py/python" -m pip install -q build
  "$py/python" -m build -q --outdir "$work/dist" "$work/clone" >/dev/null
  ls "$work/dist"
  local n; n=$("$py/python" -c "import glob, zipfile, sys; z = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]); print(sum(f.startswith('ddl/conf/') and f.endswith('.yaml') for f in z.namelist()))" "$work/dist")
  echo "YAML configs in the wheel: $n"
  [ "$n" -gt 40 ]
  "$py/python" -m pip install -q "$work"/dist/*.whl
  (cd / && "$py/python" -c "import ddl, ddl.conf; assert 'site-packages' in ddl.conf.__file__, ddl.conf.__file__")
  mkdir "$work/elsewhere" && cd "$work/elsewhere"
  "$py/ddl-train" train.epochs=2 tracking=off
  "$py/ddl-train"
  "$py/ddl-train" --help >/dev/null
  "$py/ddl-report" --experiment ddl
  # the notebook API from the wheel: Hydra's compose API finds the packaged configs
  "$py/python" -c "import ddl; r = ddl.run('train.epochs=2', 'tracking=off', quiet=True); print('ddl.run:', r)"
  cd "$repo"
}

check_readme() {
  step "README command 1, command 2's install step, command 1 again (one ./mlflow.db)"
  fresh_venv "$work/readme-venv"
  local py="$work/readme-venv/bin"
  cd "$work/clone"
  # The two commands exactly as the README's quick start prints them, in a shell that has the venv.
  local c1 c2
  c1=$(grep -m1 -E '^pip install -e \. && ddl-train$' "$repo/README.md")
  c2=$(grep -m1 -E "^pip install -e '\.\[test\]' && python -m pytest -q$" "$repo/README.md")
  [ -n "$c1" ] && [ -n "$c2" ] || { echo "check_install: README quick start changed" >&2; exit 1; }
  PATH="$py:$PATH" bash -euc "$c1"
  PATH="$py:$PATH" bash -euc "${c2%% && *}"     # command 2's install step
  PATH="$py:$PATH" bash -euc "$c1"
  "$py/python" - <<'PY'
from mlflow import MlflowClient
from ddl.config import TrackingConfig
client = MlflowClient(TrackingConfig().uri)
runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
print(f"the store holds {len(runs)} run(s): {sorted(r.info.status for r in runs)}")
assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
PY
  cd "$repo"
}

case "$what" in
  wheel) check_wheel ;;
  readme) check_readme ;;
  all) check_wheel; check_readme ;;
  *) echo "usage: $0 [wheel|readme|all]" >&2; exit 2 ;;
esac
echo; echo "== check_install: $what: ok"
