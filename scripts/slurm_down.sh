#!/usr/bin/env bash
# Stop the single-node SLURM started by scripts/slurm_up.sh: cancel all jobs, stop slurmd,
# slurmctld and munged. Idempotent: does nothing (and exits 0) when nothing is running.
# Env: DDL_SLURM_KEEP_MUNGE=1 leaves munged running (used by slurm_up.sh when it restarts SLURM).
set -euo pipefail

log() { echo "slurm_down: $*"; }

# Pid from file $1 if that process is alive and named $2 (ignores stale pid files), else nothing.
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]] && echo "$pid"
    return 0
}

# Waits up to $1 seconds for pid $2 to exit; returns 1 if it is still alive.
wait_gone() {
    for _ in $(seq $(( $1 * 10 ))); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

# TERM, then KILL after 10 s, the daemon whose pid file is $1 and command name $2.
stop_pid() {
    local pid
    pid=$(live_pid "$1" "$2")
    [[ -z $pid ]] && return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" || { log "$2 ignored SIGTERM, killing"; kill -KILL "$pid" 2>/dev/null || true; }
    log "stopped $2 (pid $pid)"
}

cancel_all_jobs() {
    local ids
    ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
    [[ -z ${ids// /} ]] && return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086  # word splitting of the id list is intended
    scancel $ids 2>/dev/null || true
    for _ in $(seq 30); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && return 0; sleep 0.5; done
    log "some jobs still listed after 15 s; shutting down anyway"
}

[[ $(id -u) -eq 0 ]] || { echo "slurm_down: ERROR: must run as root" >&2; exit 1; }
if [[ -n $(live_pid /run/slurmctld.pid slurmctld) ]]; then
    cancel_all_jobs
    # Saves state and stops slurmctld and every slurmd it knows about.
    scontrol shutdown >/dev/null 2>&1 || true
fi
ctld=$(live_pid /run/slurmctld.pid slurmctld)
[[ -n $ctld ]] && { wait_gone 15 "$ctld" || true; }
stop_pid /run/slurmctld.pid slurmctld
slurmd_pid=$(live_pid /run/slurmd.pid slurmd)
[[ -n $slurmd_pid ]] && { wait_gone 10 "$slurmd_pid" || true; }
stop_pid /run/slurmd.pid slurmd
if [[ ${DDL_SLURM_KEEP_MUNGE:-0} != 1 ]]; then
    stop_pid /run/munge/munged.pid munged
fi
log "down"
