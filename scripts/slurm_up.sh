#!/usr/bin/env bash
# Bring up a real single-node SLURM (munged + slurmctld + slurmd) on this Debian machine.
# Idempotent: a second run while everything is up and the config is unchanged is a no-op.
# Needs root (apt-get, /etc/slurm, daemons). No systemd: daemons are started directly.
# Env: DDL_SLURM_CPUS (default max(nproc, 4)), DDL_SLURM_WAIT (seconds to wait for idle, default 60).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
WAIT=${DDL_SLURM_WAIT:-60}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm_common.sh
. "$HERE/slurm_common.sh"

log() { echo "slurm_up: $*"; }
die() { echo "slurm_up: ERROR: $*" >&2; exit 1; }

# True when the pid in file $1 is alive and its command is $2 (guards against stale pid files).
pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]]
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null && return 0
    log "installing slurmctld slurmd slurm-client munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(slurmctld slurmd slurm-client munge)
    # Try the existing package lists first; refresh them only if that fails (empty or stale lists).
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/slurm_up_apt.log 2>&1 9>&-; then
        apt-get update -qq >>/tmp/slurm_up_apt.log 2>&1 9>&- || die "apt-get update failed, see /tmp/slurm_up_apt.log"
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>/tmp/slurm_up_apt.log 2>&1 9>&- \
            || die "apt-get install failed, see /tmp/slurm_up_apt.log"
    fi
}

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating munge key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    # A munged that is alive but does not answer (e.g. its socket was deleted) is stopped first:
    # on exit it unlinks the socket path, which would break a new munged started before it.
    local old
    if pid_alive /run/munge/munged.pid munged; then
        old=$(cat /run/munge/munged.pid)
        kill -TERM "$old"
        for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f /run/munge/munged.pid
    # munged refuses to run as root without --force, so run it as its own user; --force as a fallback.
    runuser -u munge -- /usr/sbin/munged 2>/dev/null 9>&- || /usr/sbin/munged --force 9>&- \
        || die "munged failed to start, see /var/log/munge/munged.log"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "munged started but munge -n | unmunge fails, see /var/log/munge/munged.log"
}

# The whole config on stdout: the lines both test clusters share (scripts/slurm_common.sh says why
# each is there), and this one's own:
#   CPUs=max(nproc,4) (with config_overrides): a 2-core box still accepts 3-4 task jobs.
#   RealMemory = total - 10%.
render_conf() {
    local cpus mem_total mem
    cpus=${DDL_SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
    mem_total=$(free -m | awk '/^Mem:/ {print $2}')
    mem=$(( mem_total - mem_total / 10 ))
    cat <<EOF
# Written by scripts/slurm_up.sh (ddl single-node test cluster); rewritten on every run.
ClusterName=ddl
SlurmctldHost=${NODE}(127.0.0.1)
$(slurm_common_conf)
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
}

# Writes the config; returns 0 if it changed (daemons must then be restarted to pick it up).
write_conf() {
    local new
    new=$(render_conf)
    [[ -f $CONF && "$(cat "$CONF")" == "$new" ]] && return 1
    install -d -m 0755 /etc/slurm
    printf '%s\n' "$new" >"$CONF"
    return 0
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1; }

start_slurm() {
    install -d -m 0755 /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    pid_alive /run/slurmctld.pid slurmctld || slurmctld 9>&- || die "slurmctld failed, see /var/log/slurm/slurmctld.log"
    pid_alive /run/slurmd.pid slurmd || slurmd 9>&- || die "slurmd failed, see /var/log/slurm/slurmd.log"
}

# Waits until the node is usable; resumes it once if a previous run left it down or drained.
wait_idle() {
    local state="" resumed=0 t0=$SECONDS
    while (( SECONDS - t0 < WAIT )); do
        state=$(node_state)
        case $state in
            idle|mix|alloc|comp) return 0 ;;
            down|drain|drng|drained)
                (( resumed )) || scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                resumed=1 ;;
        esac
        sleep 1
    done
    die "node $NODE not idle after ${WAIT}s (state '${state:-no answer}'); see /var/log/slurm/slurmctld.log and slurmd.log"
}

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and starts daemons)"
t_start=$SECONDS
# Two concurrent runs (e.g. CI and a developer) would race on apt and the daemons: serialize them.
# Every command that may leave a daemon behind gets `9>&-`, or the daemon would hold the lock forever.
exec 9>/run/ddl_slurm_up.lock
flock -w 300 9 || die "another slurm_up.sh held /run/ddl_slurm_up.lock for 300 s"
install_packages
start_munge
if write_conf; then
    log "wrote $CONF for node $NODE"
    # A running daemon would keep the old node definition: restart both.
    if pid_alive /run/slurmctld.pid slurmctld || pid_alive /run/slurmd.pid slurmd; then
        DDL_SLURM_KEEP_MUNGE=1 bash "$HERE/slurm_down.sh"
    fi
elif pid_alive /run/slurmctld.pid slurmctld && pid_alive /run/slurmd.pid slurmd \
        && [[ $(node_state) =~ ^(idle|mix|alloc|comp)$ ]]; then
    log "already up (node $NODE $(node_state))"
    exit 0
fi
start_slurm
wait_idle
log "up in $(( SECONDS - t_start ))s: $(sinfo -h -o '%P %D %t %c CPUs' | head -n1)"
