#!/usr/bin/env bash
# The GPU path, proved in minutes on any machine with one NVIDIA GPU, offline, from the source tree.
#
#   bash scripts/gpu_check.sh [--wheels DIR] [--out DIR] [--dry-run]
#
#   --wheels DIR  install ddl from this tree, and its pure-Python dependencies from the wheels in
#                 DIR (hydra-core, omegaconf, antlr4-python3-runtime, array-api-compat, mpi4py,
#                 mpich), into a scratch folder: no package registry is needed. CuPy (the one that
#                 matches the driver, with NCCL) must already be installed.
#   --out DIR     keep the logs and the table there (default: a scratch folder)
#   --dry-run     the same steps on NumPy (no GPU needed); CI runs this so the script cannot rot
#   --fetch-wheels DIR [--python-version 3.12]
#                 on a machine WITH a registry: fill DIR with those wheels for the GPU machine's
#                 Python (antlr4 4.9.3 has no wheel on PyPI: it is built here), then stop
#
# Steps, each bounded by a timeout; a failure is recorded and the script carries on:
#   versions   GPU, driver, CUDA, CuPy, NCCL, MPI
#   tests      the GPU tests (the cupy backend fixture, CuPy collectives, the cupy training test)
#   1gpu       train on 1 GPU and on NumPy in float64: final parameters within 1e-9 (relative)
#   2rank-host mpiexec -n 2, both ranks on the one GPU, allreduce=host, vs the 1-GPU run
#   2rank-nccl the same with allreduce=nccl: NCCL refuses two ranks on one GPU, so each rank gets
#              its own NCCL_HOSTID and the socket transport (a testing aid only)
#   bench      scripts/bench_step.py --backend cupy: the GPU step, the GPU's GEMM floor, the CPU step
# It ends with a table of PASS/FAIL/SKIP and the figures, and exits 1 if any step failed.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEELS="" OUT="" DRY=0 FETCH="" PYVER=3.12
PURE=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 array-api-compat==1.16.0)
BINARY=(mpi4py==4.1.2 mpich==5.0.2)
while [ $# -gt 0 ]; do
    case "$1" in
        --fetch-wheels) FETCH=$2; shift 2 ;;
        --python-version) PYVER=$2; shift 2 ;;
        --wheels) WHEELS=$(cd "$2" && pwd); shift 2 ;;
        --out) mkdir -p "$2" && OUT=$(cd "$2" && pwd); shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$FETCH" ]; then
    mkdir -p "$FETCH" && set -e
    ${PYTHON:-python3} -m pip wheel -q --no-deps -w "$FETCH" "${PURE[@]}"
    ${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux1_x86_64 -d "$FETCH" "${BINARY[@]}"
    ls "$FETCH"
    exit 0
fi
OUT=${OUT:-$(mktemp -d /tmp/ddl-gpu-check.XXXXXX)}
WORK="$OUT/work"
mkdir -p "$WORK"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
if [ "$DRY" = 1 ]; then BACKEND=numpy; else BACKEND=cupy; fi

NAMES=() RESULTS=() SECONDS_=() FIGURES=()
record() {  # name result seconds figure
    NAMES+=("$1"); RESULTS+=("$2"); SECONDS_+=("$3"); FIGURES+=("$4")
    printf '== %-10s %s (%s s) %s\n' "$1" "$2" "$3" "$4"
}

# step NAME TIMEOUT COMMAND...: run it with its output in $OUT/NAME.log; PASS on status 0
step() {
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "== $name: $*"
    t0=$(date +%s)
    (cd "$WORK" && timeout -k 10 "$limit" "$@") >"$OUT/$name.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/$name.log"
    LAST_RC=$rc LAST_SECONDS=$(( $(date +%s) - t0 ))
    if [ $rc = 124 ] || [ $rc = 137 ]; then LAST_NOTE="timed out after $limit s"; else LAST_NOTE=""; fi
}
result_of() { if [ "$LAST_RC" = 0 ]; then echo PASS; else echo FAIL; fi; }
figure() { grep -Eo "$1" "$OUT/$2.log" | tail -n 1; }

# ---- set-up: ddl and its pure-Python dependencies, offline --------------------------------------
if [ -n "$WHEELS" ]; then
    SITE="$OUT/site"
    step install 300 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "$REPO" "$WHEELS"/*.whl
    record install "$(result_of)" "$LAST_SECONDS" "from $WHEELS $LAST_NOTE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi
if ! (cd "$WORK" && "$PY" -c "import ddl.conf, hydra, array_api_compat, mpi4py") 2>"$OUT/import.log"; then
    echo "gpu_check: ddl or a dependency does not import ($(tail -n 1 "$OUT/import.log")); install"\
         "ddl (pip install -e .) or pass --wheels DIR with the dependencies' wheels" >&2
fi
MPIEXEC=$(command -v mpiexec || true)

# ---- versions -----------------------------------------------------------------------------------
step versions 60 "$PY" - "$BACKEND" <<'EOF'
import sys
import numpy
from mpi4py import MPI
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, MPI: "
      f"{MPI.Get_library_version().splitlines()[0].strip()}")
if sys.argv[1] == "cupy":
    import cupy
    from cupy.cuda import nccl, runtime
    props = runtime.getDeviceProperties(0)
    nccl_version = nccl.get_version() if getattr(nccl, "available", False) else "missing"
    print(f"GPU: {props['name'].decode()} ({runtime.getDeviceCount()} visible), driver CUDA "
          f"{runtime.driverGetVersion()}, runtime CUDA {runtime.runtimeGetVersion()}, "
          f"CuPy {cupy.__version__}, NCCL {nccl_version}")
else:
    print("GPU: none (dry run on NumPy)")
EOF
record versions "$(result_of)" "$LAST_SECONDS" "$(grep -E '^GPU' "$OUT/versions.log" | head -c 100) $LAST_NOTE"

# ---- the GPU tests ------------------------------------------------------------------------------
GPU_TESTS=()
for t in activations batchnorm gradcheck losses model optimizers comm train; do
    GPU_TESTS+=("$REPO/tests/test_$t.py")
done
step tests 300 "$PY" -m pytest -q -p no:cacheprovider -rs --rootdir "$REPO" -k "cupy or gpu" \
    "${GPU_TESTS[@]}"
SUMMARY=$(grep -Eo '[0-9]+ (passed|failed|skipped|deselected|error)[a-z]*' "$OUT/tests.log" | tr '\n' ' ')
if [ "$LAST_RC" = 0 ] && ! grep -Eq '[0-9]+ passed' "$OUT/tests.log"; then
    record tests SKIP "$LAST_SECONDS" "no GPU test ran: $SUMMARY"
elif [ "$LAST_RC" = 5 ]; then
    record tests SKIP "$LAST_SECONDS" "nothing collected"
else
    record tests "$(result_of)" "$LAST_SECONDS" "$SUMMARY$LAST_NOTE"
fi

# ---- the same model on 1 GPU, on NumPy, and on 2 ranks sharing the GPU ----------------------------
TRAIN=(data=synthetic data.m=1200 data.n_x=20 data.classes=3 data.normalize=true
       "model.hidden=[64,32]" model.batchnorm=true model.keep_prob=0.9 optimizer=adam
       train.epochs=3 train.batch_size=64 train.dtype=float64 train.progress=false tracking=off)
COMPARE=("$PY" "$REPO/scripts/compare_final.py" --rtol 1e-9)

step cpu 180 "$PY" -m ddl "${TRAIN[@]}" backend=numpy out_dir="$WORK/cpu"
CPU_OK=$LAST_RC
step gpu 180 "$PY" -m ddl "${TRAIN[@]}" backend=$BACKEND out_dir="$WORK/gpu1"
if [ "$LAST_RC" = 0 ] && [ "$CPU_OK" = 0 ]; then
    step 1gpu 60 "${COMPARE[@]}" "$WORK/gpu1/final.npz" "$WORK/cpu/final.npz"
    record 1gpu "$(result_of)" "$LAST_SECONDS" "1 GPU vs NumPy: $(figure 'max relative difference [^ ]+' 1gpu)"
else
    record 1gpu FAIL "$LAST_SECONDS" "a training failed: see $OUT/cpu.log, $OUT/gpu.log"
fi

two_ranks() {  # name allreduce [per-rank NCCL testing aid]
    local name=$1 mode=$2 aid=${3:-}
    if [ -z "$MPIEXEC" ]; then record "$name" SKIP 0 "no mpiexec (the mpich wheel)"; return; fi
    local cmd=("$PY" -m ddl "${TRAIN[@]}" backend=$BACKEND allreduce=$mode out_dir="$WORK/$name")
    if [ -n "$aid" ]; then
        # Distinct host ids make NCCL treat the ranks as two nodes (no "Duplicate GPU detected"),
        # talking over sockets on the loopback interface.
        step "$name" 240 env NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 NCCL_P2P_DISABLE=1 \
            NCCL_SHM_DISABLE=1 "$MPIEXEC" -n 1 -env NCCL_HOSTID ddl-check-0 "${cmd[@]}" \
            : -n 1 -env NCCL_HOSTID ddl-check-1 "${cmd[@]}"
    else
        step "$name" 240 "$MPIEXEC" -n 2 "${cmd[@]}"
    fi
    if [ "$LAST_RC" != 0 ]; then
        record "$name" FAIL "$LAST_SECONDS" "training failed $LAST_NOTE: $(grep -m1 -Ei 'error|refus' "$OUT/$name.log" | head -c 90)"
        return
    fi
    local seconds=$LAST_SECONDS
    step "$name-cmp" 60 "${COMPARE[@]}" "$WORK/$name/final.npz" "$WORK/gpu1/final.npz"
    record "$name" "$(result_of)" "$seconds" "2 ranks vs 1: $(figure 'max relative difference [^ ]+' "$name-cmp")"
}
two_ranks 2rank-host host
if [ "$DRY" = 1 ]; then
    two_ranks 2rank-nccl host aid   # NumPy has no NCCL: the same launch line, reduced on the host
else
    two_ranks 2rank-nccl nccl aid
fi

# ---- the benchmark ------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then BENCH=(--steps 2 --rounds 1 --batch 64); else BENCH=(--steps 20 --rounds 5); fi
step bench 240 "$PY" "$REPO/scripts/bench_step.py" --backend "$BACKEND" "${BENCH[@]}"
BENCH_FIGURES=$(grep -E '^  (ddl step|GEMM floor)' "$OUT/bench.log" \
    | sed -E 's/^  ([^(]+)\(([^)]*)\) +([0-9.]+) .*/\1(\2) \3 ms;/' | tr '\n' ' ')
record bench "$(result_of)" "$LAST_SECONDS" "$BENCH_FIGURES$(figure 'CPU step / GPU step: [0-9.]+x' bench)$LAST_NOTE"

# ---- the table ----------------------------------------------------------------------------------
{
    echo
    echo "ddl GPU check ($([ "$DRY" = 1 ] && echo 'dry run on NumPy' || echo 'CuPy')), $(date -u '+%Y-%m-%d %H:%M UTC'), logs in $OUT"
    printf '| %-10s | %-6s | %7s | %s\n' step result seconds figures
    printf '| %-10s | %-6s | %7s | %s\n' ---------- ------ ------- -------
    for i in "${!NAMES[@]}"; do
        printf '| %-10s | %-6s | %7s | %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_[$i]}" "${FIGURES[$i]}"
    done
} | tee "$OUT/table.md"
for r in "${RESULTS[@]}"; do [ "$r" = FAIL ] && exit 1; done
exit 0
