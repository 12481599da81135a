#!/usr/bin/env bash
# The GPU path, proved in minutes on any machine with one NVIDIA GPU, offline, from the source tree.
#
#   bash scripts/gpu_check.sh [--wheels DIR] [--out DIR] [--budget SECONDS] [--dry-run]
#
#   --wheels DIR  copy ddl from this tree, and install its Python dependencies from the wheels in DIR
#                 (hydra-core, omegaconf, antlr4-python3-runtime, PyYAML, array-api-compat,
#                 threadpoolctl, psutil, mpi4py) into a scratch folder, and the mpich wheel's MPI
#                 library and mpiexec into a prefix of their own, which mpi4py is pointed at
#                 (MPI4PY_LIBMPI): no package registry is needed. CuPy (with NCCL) must be there.
#   --out DIR     where the table (table.md) and every log (gpu-check-logs.tar.gz) go: two files
#                 (default: the scratch folder, named at the end)
#   --budget S    the whole script's time (default 480 s): each step runs within its own limit or
#                 what is left, whichever is less; a step with too little left is skipped
#   --dry-run     the same steps on NumPy (no GPU needed); CI runs it with --wheels in a fresh
#                 virtual environment that has what the GPU machines have (no MPI library, no
#                 Hydra, no array-api-compat, no MLflow), so the script cannot rot
#   --fetch-wheels DIR [--python-version 3.12]
#                 on a machine WITH a registry: fill DIR with those wheels for the GPU machine's
#                 Python (antlr4 4.9.3 has no wheel on PyPI: it is built here), then stop
#
# Steps, safest first, the riskiest (NCCL) last; each bounded, a failure recorded, the rest run:
#   install    (with --wheels) the offline install, and mpiexec/libmpi from the mpich wheel
#   versions   GPU, driver, CUDA, CuPy, NCCL, MPI
#   tests      the GPU tests (the cupy backend fixture, CuPy collectives, the cupy training test,
#              the fused CuPy update's bit-identity with the portable one)
#   1gpu       train on 1 GPU and on NumPy in float64: final parameters within 1e-9 (relative)
#   bench      scripts/bench_step.py --backend cupy: the GPU step, the GPU's GEMM floor, the CPU step
#   2rank-host mpiexec -n 2, both ranks on the one GPU, allreduce=host, vs the 1-GPU run
#   2rank-nccl the same with allreduce=nccl: NCCL refuses two ranks on one GPU, so each rank gets
#              its own NCCL_HOSTID and the socket transport (a testing aid only)
# Both 2-rank steps check that the run's world size was 2 (an mpiexec of another MPI than the
# library mpi4py loaded gives two 1-rank runs). It ends with a table of PASS/FAIL/SKIP and the
# figures, and exits 1 if any step failed.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEELS="" OUTDIR="" DRY=0 FETCH="" PYVER=3.12 BUDGET=480
PURE=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 array-api-compat==1.16.0
      threadpoolctl==3.8.0)
BINARY=(mpi4py==4.1.2 mpich==5.0.2 PyYAML==6.0.4 psutil==7.2.2)
while [ $# -gt 0 ]; do
    case "$1" in
        --fetch-wheels) FETCH=$2; shift 2 ;;
        --python-version) PYVER=$2; shift 2 ;;
        --wheels) WHEELS=$(cd "$2" && pwd); shift 2 ;;
        --out) mkdir -p "$2" && OUTDIR=$(cd "$2" && pwd); shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$FETCH" ]; then
    mkdir -p "$FETCH" && set -e
    ${PYTHON:-python3} -m pip wheel -q --no-deps -w "$FETCH" "${PURE[@]}"
    ${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$FETCH" "${BINARY[@]}"
    ls "$FETCH"
    exit 0
fi
# Everything the check makes goes to a scratch folder of its own (DDL_GPU_CHECK_DIR to choose it):
# a runner's OUT variable, or a small --out folder, must not fill up with installs and run folders.
SCRATCH=${DDL_GPU_CHECK_DIR:-$(mktemp -d /tmp/ddl-gpu-check.XXXXXX)}
LOGS="$SCRATCH/logs" WORK="$SCRATCH/work"
mkdir -p "$LOGS" "$WORK"
OUTDIR=${OUTDIR:-$SCRATCH}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
if [ "$DRY" = 1 ]; then BACKEND=numpy; else BACKEND=cupy; fi
STARTED=$(date +%s)

NAMES=() RESULTS=() SECONDS_=() FIGURES=()
record() {  # name result seconds figure
    NAMES+=("$1"); RESULTS+=("$2"); SECONDS_+=("$3"); FIGURES+=("$4")
    printf '== %-10s %s (%s s) %s\n' "$1" "$2" "$3" "$4"
}

# step NAME LIMIT COMMAND...: run it with its output in $LOGS/NAME.log, within LIMIT seconds or
# what is left of the budget; LAST_RC 0 is a pass, 125 a step skipped for want of time
step() {
    local name=$1 limit=$2 t0 left
    shift 2
    left=$(( BUDGET - ($(date +%s) - STARTED) - 15 ))
    [ "$left" -lt "$limit" ] && limit=$left
    LAST_SECONDS=0 LAST_NOTE=""
    if [ "$limit" -lt 20 ]; then
        LAST_RC=125 LAST_NOTE="skipped: the budget of $BUDGET s is spent"
        echo "== $name: $LAST_NOTE" | tee "$LOGS/$name.log"
        return
    fi
    echo "== $name: $*"
    t0=$(date +%s)
    (cd "$WORK" && timeout -k 10 "$limit" "$@") >"$LOGS/$name.log" 2>&1
    LAST_RC=$?
    tail -n 15 "$LOGS/$name.log"
    LAST_SECONDS=$(( $(date +%s) - t0 ))
    if [ $LAST_RC = 124 ] || [ $LAST_RC = 137 ]; then LAST_NOTE="timed out after $limit s"; fi
}
result_of() { case "$LAST_RC" in 0) echo PASS ;; 125) echo SKIP ;; *) echo FAIL ;; esac; }
figure() { grep -Eo "$1" "$LOGS/$2.log" | tail -n 1; }

# ---- set-up: ddl and its dependencies, offline ----------------------------------------------------
if [ -n "$WHEELS" ]; then
    SITE="$SCRATCH/site" MPI_PREFIX="$SCRATCH/mpich"
    # ddl itself is copied in as its wheel would lay it out (ddl/, with conf/ as ddl/conf): building a
    # wheel offline needs setuptools and wheel, which a bare Python may not have. pip's --target
    # leaves out a wheel's data files, which is all the mpich wheel is (libmpi, mpiexec): it goes
    # into a prefix of its own.
    step install 300 sh -c "mkdir -p '$SITE' && cp -r '$REPO/ddl' '$SITE/ddl' && cp -r '$REPO/conf' '$SITE/ddl/conf' \
        && '$PY' -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target '$SITE' \$(ls '$WHEELS'/*.whl | grep -v /mpich-) \
        && '$PY' -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix '$MPI_PREFIX' \
        '$WHEELS'/mpich-*.whl"
    record install "$(result_of)" "$LAST_SECONDS" "from $WHEELS $LAST_NOTE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$MPI_PREFIX/bin:$SITE/bin:$PATH"
    export MPI4PY_LIBMPI="$MPI_PREFIX/lib/libmpi.so.12"
fi
if ! (cd "$WORK" && "$PY" -c "import ddl.conf, hydra, array_api_compat, mpi4py") 2>"$LOGS/import.log"; then
    echo "gpu_check: ddl or a dependency does not import ($(tail -n 1 "$LOGS/import.log")); install"\
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
record versions "$(result_of)" "$LAST_SECONDS" "$(grep -E '^GPU' "$LOGS/versions.log" | head -c 100) $LAST_NOTE"

# ---- the GPU tests ------------------------------------------------------------------------------
GPU_TESTS=()
for t in activations batchnorm gradcheck losses model optimizers comm train fused; do
    GPU_TESTS+=("$REPO/tests/test_$t.py")
done
step tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs --rootdir "$REPO" -k "cupy or gpu" \
    "${GPU_TESTS[@]}"
SUMMARY=$(grep -Eo '[0-9]+ (passed|failed|skipped|deselected|error)[a-z]*' "$LOGS/tests.log" | tr '\n' ' ')
if [ "$LAST_RC" = 0 ] && ! grep -Eq '[0-9]+ passed' "$LOGS/tests.log"; then
    record tests SKIP "$LAST_SECONDS" "no GPU test ran: $SUMMARY"
elif [ "$LAST_RC" = 5 ]; then
    record tests SKIP "$LAST_SECONDS" "nothing collected"
else
    record tests "$(result_of)" "$LAST_SECONDS" "$SUMMARY$LAST_NOTE"
fi

# ---- the same model on 1 GPU and on NumPy -------------------------------------------------------
TRAIN=(data=synthetic data.m=1200 data.n_x=20 data.classes=3 data.normalize=true
       "model.hidden=[64,32]" model.batchnorm=true model.keep_prob=0.9 optimizer=adam
       train.epochs=3 train.batch_size=64 train.dtype=float64 train.progress=false tracking=off)
COMPARE=("$PY" "$REPO/scripts/compare_final.py" --rtol 1e-9)

step cpu 120 "$PY" -m ddl "${TRAIN[@]}" backend=numpy out_dir="$WORK/cpu"
CPU_OK=$LAST_RC
step gpu 120 "$PY" -m ddl "${TRAIN[@]}" backend=$BACKEND out_dir="$WORK/gpu1"
if [ "$LAST_RC" = 0 ] && [ "$CPU_OK" = 0 ]; then
    step 1gpu 60 "${COMPARE[@]}" "$WORK/gpu1/final.npz" "$WORK/cpu/final.npz"
    record 1gpu "$(result_of)" "$LAST_SECONDS" "1 GPU vs NumPy: $(figure 'max relative difference [^ ]+' 1gpu) $LAST_NOTE"
elif [ "$LAST_RC" = 125 ]; then
    record 1gpu SKIP 0 "$LAST_NOTE"
else
    record 1gpu FAIL "$LAST_SECONDS" "a training did not end: see cpu.log, gpu.log $LAST_NOTE"
fi

# ---- the benchmark ------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then BENCH=(--steps 2 --rounds 1 --batch 64); else BENCH=(--steps 20 --rounds 5); fi
step bench 150 "$PY" "$REPO/scripts/bench_step.py" --backend "$BACKEND" "${BENCH[@]}"
BENCH_FIGURES=$(grep -E '^  (ddl step|GEMM floor)' "$LOGS/bench.log" \
    | sed -E 's/^  ([^(]+)\(([^)]*)\) +([0-9.]+) .*/\1(\2) \3 ms;/' | tr '\n' ' ')
record bench "$(result_of)" "$LAST_SECONDS" "$BENCH_FIGURES$(figure 'CPU step / GPU step: [0-9.]+x' bench)$LAST_NOTE"

# ---- 2 ranks on the one GPU: host staging, then NCCL (the riskiest, last) ------------------------
two_ranks() {  # name allreduce [per-rank NCCL testing aid]
    local name=$1 mode=$2 aid=${3:-}
    if [ -z "$MPIEXEC" ]; then record "$name" SKIP 0 "no mpiexec (the mpich wheel)"; return; fi
    local cmd=("$PY" -m ddl "${TRAIN[@]}" backend=$BACKEND allreduce=$mode out_dir="$WORK/$name")
    if [ -n "$aid" ]; then
        # Distinct host ids make NCCL treat the ranks as two nodes (no "Duplicate GPU detected"),
        # talking over sockets on the loopback interface.
        step "$name" 180 env NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 NCCL_P2P_DISABLE=1 \
            NCCL_SHM_DISABLE=1 "$MPIEXEC" -n 1 -env NCCL_HOSTID ddl-check-0 "${cmd[@]}" \
            : -n 1 -env NCCL_HOSTID ddl-check-1 "${cmd[@]}"
    else
        step "$name" 180 "$MPIEXEC" -n 2 "${cmd[@]}"
    fi
    if [ "$LAST_RC" = 125 ]; then record "$name" SKIP 0 "$LAST_NOTE"; return; fi
    if [ "$LAST_RC" != 0 ]; then
        record "$name" FAIL "$LAST_SECONDS" "training did not end $LAST_NOTE: $(grep -m1 -Ei 'error|refus' "$LOGS/$name.log" | head -c 90)"
        return
    fi
    local seconds=$LAST_SECONDS world
    world=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['world_size'])" "$WORK/$name/summary.json" 2>&1)
    if [ "$world" != 2 ]; then
        record "$name" FAIL "$seconds" "world size $world, not 2: mpiexec ($MPIEXEC) and the MPI library mpi4py loaded disagree"
        return
    fi
    step "$name-cmp" 60 "${COMPARE[@]}" "$WORK/$name/final.npz" "$WORK/gpu1/final.npz"
    record "$name" "$(result_of)" "$seconds" "2 ranks vs 1: $(figure 'max relative difference [^ ]+' "$name-cmp")"
}
two_ranks 2rank-host host
if [ "$DRY" = 1 ]; then
    two_ranks 2rank-nccl host aid   # NumPy has no NCCL: the same launch line, reduced on the host
else
    two_ranks 2rank-nccl nccl aid
fi

# ---- the table, and the logs beside it ----------------------------------------------------------
{
    echo
    echo "ddl GPU check ($([ "$DRY" = 1 ] && echo 'dry run on NumPy' || echo 'CuPy')), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - STARTED )) s of a $BUDGET s budget"
    printf '| %-10s | %-6s | %7s | %s\n' step result seconds figures
    printf '| %-10s | %-6s | %7s | %s\n' ---------- ------ ------- -------
    for i in "${!NAMES[@]}"; do
        printf '| %-10s | %-6s | %7s | %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_[$i]}" "${FIGURES[$i]}"
    done
} | tee "$SCRATCH/table.md"
[ "$OUTDIR" != "$SCRATCH" ] && cp "$SCRATCH/table.md" "$OUTDIR/table.md"
tar czf "$OUTDIR/gpu-check-logs.tar.gz" -C "$SCRATCH" logs
echo "table and logs: $OUTDIR/table.md, $OUTDIR/gpu-check-logs.tar.gz (scratch: $SCRATCH)"
for r in "${RESULTS[@]}"; do [ "$r" = FAIL ] && exit 1; done
exit 0
