#!/usr/bin/env bash
# A real multi-node SLURM across scripts/cluster_up.sh's hosts (it calls this with --slurm):
# slurmctld on the bridge's address, one slurmd per host, each in its host's network namespace
# with the host's name, all with a config of their own (SLURM_CONF=$DIR/slurm.conf), beside any
# single-node SLURM of scripts/slurm_up.sh (other ports, other state). Jobs: `sbatch -N 2 ...`,
# `srun --mpi=pmi2` across the hosts.
#
#   bash scripts/cluster_slurm.sh DIR N RANKS HEAD_ADDRESS UCX_TLS
set -euo pipefail

DIR=$1 N=$2 RANKS=$3 HEAD=$4 TLS=$5
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm_common.sh
. "$HERE/slurm_common.sh"
S=$DIR/slurm
CONF=$DIR/slurm.conf
PORT=6827                 # slurmctld (slurm_up.sh's own listens on 6817); slurmd keeps 6818 per host

die() { echo "cluster_slurm: error: $*" >&2; exit 1; }

command -v slurmctld >/dev/null && command -v slurmd >/dev/null || {
    echo "cluster_slurm: SLURM's daemons are not installed: bringing up the single-node one first installs them"
    bash "$HERE/slurm_up.sh" >/dev/null || die "scripts/slurm_up.sh failed (it installs slurmctld, slurmd, munge)"
}
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || bash "$HERE/slurm_up.sh" >/dev/null \
    || die "munge does not answer (scripts/slurm_up.sh starts it)"

mkdir -p "$S/state"
# every task's environment: UCX over TCP between the hosts (cluster_up.sh says why), on the host's
# own interface: slurmd's tasks see the machine's /sys, whose other devices UCX would try and list
# in its address, which then garbles MPICH's PMI-2 exchange with slurmstepd now and then
printf '#!/bin/sh\n[ -n "$UCX_TLS" ] || echo "export UCX_TLS=%s"\n[ -n "$UCX_NET_DEVICES" ] || echo "export UCX_NET_DEVICES=eth0"\n' "$TLS" > "$S/task_prolog.sh"
chmod +x "$S/task_prolog.sh"
cpus=$(( $(nproc) > RANKS ? $(nproc) : RANKS ))
{
    echo "# Written by scripts/cluster_slurm.sh: the simulated cluster's SLURM ($N hosts)."
    echo "ClusterName=ddlnet"
    echo "SlurmctldHost=$(hostname -s)($HEAD)"
    echo "SlurmctldPort=$PORT"
    slurm_common_conf
    cat <<EOF
TaskProlog=$S/task_prolog.sh
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool-%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd-%n.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd-%n.log
EOF
    for i in $(seq "$N"); do
        echo "NodeName=h$i NodeAddr=${HEAD%.*}.$i CPUs=$cpus RealMemory=1000 State=UNKNOWN"
    done
    echo "PartitionName=hosts Nodes=h[1-$N] Default=YES MaxTime=INFINITE State=UP"
} > "$CONF"
export SLURM_CONF=$CONF
slurmctld -f "$CONF" 9>&- || die "slurmctld failed, see $S/slurmctld.log"
for i in $(seq "$N"); do
    mkdir -p "$S/spool-h$i"
    # nsenter, not ip netns exec: that one mounts a /sys of its own, without the cgroup tree
    nsenter --net="/run/netns/ddl-h$i" unshare --uts bash -c 'hostname "$0" && exec slurmd -f "$1" -N "$0"' "h$i" "$CONF" 9>&- \
        || die "slurmd on h$i failed, see $S/slurmd-h$i.log"
done
for _ in $(seq 60); do
    idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(idle|mix|alloc)/' | wc -l)
    (( idle == N )) && { echo "cluster_slurm: up: $(sinfo -h -o '%P %D %t' | head -1) (SLURM_CONF=$CONF)"; exit 0; }
    sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(down|drain)/ {print $1}' | while read -r node; do
        scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
    done
    sleep 1
done
die "the hosts' slurmd did not all become idle in 60 s: $(sinfo -h -N -o '%N %t' 2>&1 | tr '\n' ' '); see $S/*.log"
