#!/usr/bin/env bash
# A small cluster on this machine: N hosts as Linux network namespaces on a bridge, each with its
# own network stack, address (10.77.0.<i>) and hostname (h<i>), so that MPI and ddl see N nodes.
#
#   bash scripts/cluster_up.sh [N] [--link RATE[,DELAY]] [--ranks K] [--slurm]
#
#   N            hosts (default 2)
#   --link       shape every host's link (tc on its interface, both directions): RATE as tc writes
#                it (10gbit, 1gbit, 500mbit); DELAY (20us) needs the kernel's netem, and is left
#                out with a warning where there is none. Without --link: veth at full speed.
#   --ranks K    slots per host in the hostfile (default 2)
#   --slurm      also a real multi-node SLURM across the hosts (a slurmctld on the bridge, one
#                slurmd per host), with a config of its own: SLURM_CONF=$DIR/slurm.conf
#
# What it leaves in $DDL_CLUSTER_DIR (default /run/ddl-cluster):
#   hostfile     MPICH's format, one "address:K" per host (mpiexec -f hostfile)
#   hosts        "address name" per host
#   launch       the launcher stand-in for MPICH (no sshd): runs a proxy inside its host's
#                namespace, with the host's name (mpiexec -launcher ssh -launcher-exec launch)
#   mpiexec      mpiexec with all of that: $DIR/mpiexec -n 4 ddl-train ...
#   config       what was asked for (a second call with the same is a no-op)
#   files.h<i>   (yours to write, optional) "SOURCE TARGET" lines bind-mounted on that host only,
#                for processes launched there from then on: a host with another file than the
#                others (a different ddl release, another copy of the data)
#
# Idempotent; scripts/cluster_down.sh removes everything it made. Needs root and `ip netns`.
set -euo pipefail

DIR=${DDL_CLUSTER_DIR:-/run/ddl-cluster}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BRIDGE=ddlbr0
NET=10.77.0
HEAD=$NET.254          # the bridge's own address: where mpiexec and slurmctld listen
UCX_TLS=tcp,self       # between hosts over their links (the mpiexec wrapper, SLURM's TaskProlog)

die() { echo "cluster_up: error: $*" >&2; exit 1; }
log() { echo "cluster_up: $*"; }

N=2 LINK="" RANKS=2 SLURM=0
while (( $# )); do
    case $1 in
        --link) LINK=${2:?--link needs RATE[,DELAY]}; shift 2 ;;
        --link=*) LINK=${1#--link=}; shift ;;
        --ranks) RANKS=${2:?--ranks needs a number}; shift 2 ;;
        --slurm) SLURM=1; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) [[ $1 =~ ^[0-9]+$ ]] || die "unknown argument '$1' (see --help)"; N=$1; shift ;;
    esac
done
(( N >= 1 && N <= 32 )) || die "N must be 1..32 hosts, got $N"
(( RANKS >= 1 )) || die "--ranks must be >= 1, got $RANKS"
RATE=${LINK%%,*} DELAY=""
[[ $LINK == *,* ]] && DELAY=${LINK#*,}
[[ -z $RATE || $RATE =~ ^[0-9.]+[kmgt]?(bit|bps)$ ]] || die "--link rate '$RATE' is not a tc rate (10gbit, 1gbit, 500mbit)"
[[ -z $DELAY || $DELAY =~ ^[0-9.]+(us|ms)$ ]] || die "--link delay '$DELAY' is not a delay (20us, 1ms)"

(( EUID == 0 )) || die "network namespaces need root (run it with sudo, or as root in a container with CAP_NET_ADMIN)"
command -v ip >/dev/null || die "no 'ip' command (apt-get install iproute2)"
ip netns list >/dev/null 2>&1 || die "'ip netns' does not work here ($(ip netns list 2>&1 | head -1)): the kernel or the container does not allow network namespaces"
command -v unshare >/dev/null || die "no 'unshare' (util-linux), which gives each host its own hostname"

# what is asked for, and by which version of these scripts (an edited one builds afresh)
WANT="hosts=$N link=$LINK ranks=$RANKS slurm=$SLURM scripts=$(cat "$0" "$HERE/cluster_slurm.sh" | cksum | cut -d' ' -f1)"
up_already() {
    [[ -f $DIR/config && $(cat "$DIR/config") == "$WANT" ]] || return 1
    local i
    for i in $(seq "$N"); do ip netns exec "ddl-h$i" true 2>/dev/null || return 1; done
    (( SLURM == 0 )) || SLURM_CONF=$DIR/slurm.conf timeout 10 scontrol ping 2>/dev/null | grep -q " UP"
}
if up_already; then
    log "up already ($WANT)"
    exit 0
fi
bash "$HERE/cluster_down.sh" >/dev/null

shape() {   # shape HOST: its interface's egress (so each direction of every link) to RATE / DELAY
    local ns=$1
    [[ -n $RATE ]] || return 0
    if [[ -n $DELAY ]] && ip netns exec "$ns" tc qdisc replace dev eth0 root netem rate "$RATE" delay "$DELAY" 2>/dev/null; then
        return 0
    fi
    [[ -n $DELAY && $ns == ddl-h1 ]] && echo "cluster_up: warning: this kernel has no netem qdisc, so the delay $DELAY is left out; the link keeps veth's own latency (scripts/scaling_model.py --hosts measures it)" >&2
    # a token bucket: a burst of 1 ms at RATE (at least 64 KiB), a queue of 50 ms
    ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$RATE" burst "$(burst "$RATE")" latency 50ms \
        || die "tc could not shape $ns to $RATE"
}
burst() {   # bytes a link at rate $1 carries in 1 ms, at least 64 KiB
    python3 - "$1" <<'PY'
import re, sys
v, unit, kind = re.fullmatch(r"([0-9.]+)([kmgt]?)(bit|bps)", sys.argv[1]).groups()
bits = float(v) * 1000 ** "-kmgt".index(unit or "-") * (8 if kind == "bps" else 1)
print(max(int(bits / 8 / 1000), 65536))
PY
}

mkdir -p "$DIR"
ip link add "$BRIDGE" type bridge
ip addr add "$HEAD/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
: > "$DIR/hosts"; : > "$DIR/hostfile"
for i in $(seq "$N"); do
    ns=ddl-h$i
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" master "$BRIDGE" up
    ip netns exec "$ns" ip addr add "$NET.$i/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    shape "$ns"
    echo "$NET.$i h$i" >> "$DIR/hosts"
    echo "$NET.$i:$RANKS" >> "$DIR/hostfile"
done

# MPICH's ssh launcher runs `launch [options] HOST COMMAND`: here the command runs in HOST's
# namespace, in a UTS namespace of its own named after the host (MPI and ddl tell nodes apart by
# hostname), with the caller's environment and working directory (one filesystem: it is shared,
# but for the host's own files.<name> bind mounts, in the mount namespace ip netns exec makes)
cat > "$DIR/launch" <<EOF
#!/usr/bin/env bash
while [[ \$1 == -* ]]; do [[ \$1 == -[ilopF] ]] && shift; shift; done
host=\$1; shift
name=\$(awk -v a="\$host" '\$1 == a || \$2 == a {print \$2}' "$DIR/hosts")
[[ -n \$name ]] || { echo "launch: \$host is not a host of this cluster ($DIR/hosts)" >&2; exit 255; }
exec ip netns exec "ddl-\$name" unshare --uts bash -c 'hostname "\$0" || exit 255
if [[ -f \$2 ]]; then while read -r src dst; do mount --bind "\$src" "\$dst" || exit 255; done < "\$2"; fi
exec bash -c "\$1"' "\$name" "\$*" "$DIR/files.\$name"
EOF
cat > "$DIR/mpiexec" <<EOF
#!/usr/bin/env bash
# mpiexec across this machine's simulated hosts (scripts/cluster_up.sh): the hostfile, the
# launcher stand-in, and the bridge's address for the proxies to call back. UCX would find that
# the hosts share one machine and move their bytes through its shared memory, past the links:
# told to use TCP, it sends them over the hosts' network (MPICH's own shared memory still
# carries the bytes between the ranks of one host)
export UCX_TLS=\${UCX_TLS:-$UCX_TLS}
exec mpiexec -f "$DIR/hostfile" -launcher ssh -launcher-exec "$DIR/launch" -localhost $HEAD "\$@"
EOF
chmod +x "$DIR/launch" "$DIR/mpiexec"

if (( SLURM )); then
    bash "$HERE/cluster_slurm.sh" "$DIR" "$N" "$RANKS" "$HEAD" "$UCX_TLS" || die "SLURM across the hosts did not come up (above)"
fi
echo "$WANT" > "$DIR/config"
log "up: $N hosts ($(awk '{printf "%s%s=%s", (NR > 1 ? ", " : ""), $2, $1}' "$DIR/hosts"))${LINK:+, links $LINK}; $DIR/mpiexec -n $((N * RANKS)) ..."
