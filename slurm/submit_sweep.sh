#!/bin/bash
# Submit a sweep as a SLURM job array under one MLflow parent run:
#   bash slurm/submit_sweep.sh "GRID" [overrides for every point...]
#   bash slurm/submit_sweep.sh "optimizer=gd,momentum,adam" data=moons train.epochs=500
# Log-scale learning rates: GRID="$(python -m ddl.sweep logspace optimizer.lr 1e-4 1e-1 4) optimizer=adam"
# Tracking: DDL_URI (default: ./mlflow.db), DDL_EXPERIMENT (default: ddl); sbatch options: DDL_SBATCH.
# Prints the array job id and the parent run id.
set -euo pipefail
GRID="${1:?usage: submit_sweep.sh \"key=a,b key2=c,d\" [overrides...]}"
shift
here="$(cd "$(dirname "$0")" && pwd)"
URI="${DDL_URI:-sqlite:///$(pwd)/mlflow.db}"
EXPERIMENT="${DDL_EXPERIMENT:-ddl}"
# shellcheck disable=SC2086
N=$(python -m ddl.sweep count $GRID)
if ! command -v sbatch >/dev/null; then
  echo "submit_sweep.sh: error: sbatch not found: this script submits a SLURM job array. Without SLURM," \
       "run the same sweep in one process: ddl-train -m $GRID $*" >&2
  exit 2
fi
PARENT=$(python -m ddl.sweep parent --name "sweep: $GRID" --uri "$URI" --experiment "$EXPERIMENT")
# a submission that fails after the parent exists ends it (FAILED: it has no finished point)
trap 'python -m ddl.sweep end "$PARENT" --uri "$URI" --experiment "$EXPERIMENT" >&2' ERR
# shellcheck disable=SC2086
# (the grid goes through the environment: sbatch --export=A=x,y would split it at its commas)
JOB=$(DDL_GRID="$GRID" DDL_PARENT="$PARENT" sbatch --parsable ${DDL_SBATCH:-} --export=ALL \
      --array="0-$((N - 1))" "$here/sweep.sbatch" "tracking.uri=$URI" "tracking.experiment=$EXPERIMENT" "$@")
JOB="${JOB%%;*}"
sbatch --parsable --dependency="afterany:$JOB" --job-name=ddl-sweep-end --output=/dev/null \
       --wrap "python -m ddl.sweep end $PARENT --uri '$URI' --experiment '$EXPERIMENT'" >/dev/null
trap - ERR
echo "array job $JOB ($N points), MLflow parent run $PARENT"
