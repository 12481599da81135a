#!/usr/bin/env bash
# Remove what scripts/cluster_up.sh made: its SLURM daemons, the hosts' namespaces (and every
# process still in them), the bridge and $DDL_CLUSTER_DIR. Safe to run when nothing is up.
set -uo pipefail

DIR=${DDL_CLUSTER_DIR:-/run/ddl-cluster}
(( EUID == 0 )) || { echo "cluster_down: error: needs root (as cluster_up.sh did)" >&2; exit 1; }

for pidfile in "$DIR"/slurm/*.pid; do
    [[ -f $pidfile ]] && kill -KILL "$(cat "$pidfile")" 2>/dev/null
done
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^ddl-h[0-9]+$/ {print $1}'); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
    ip netns delete "$ns" 2>/dev/null
done
# a host's veth pair goes with its namespace once its last process has gone; not waited for
for link in $(ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^ddl-h[0-9]+@/ {split($2, a, "@"); print a[1]}'); do
    ip link delete "$link" 2>/dev/null
done
ip link show ddlbr0 >/dev/null 2>&1 && ip link delete ddlbr0
rm -rf "$DIR"
echo "cluster_down: nothing of the simulated cluster is left"
