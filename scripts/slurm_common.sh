# Sourced by scripts/slurm_up.sh (one node) and scripts/cluster_slurm.sh (the simulated hosts):
# the slurm.conf lines both test clusters share. Why each non-default one is there:
#   CR_CPU (not CR_CPU_Memory): memory is not a consumable, so jobs need no --mem.
#   proctrack/linuxproc + task/none: there is no usable cgroup hierarchy in this container.
#   JobRequeue=1: batch jobs are requeueable by default; RequeueExit=75: a batch script that exits 75
#     (EX_TEMPFAIL, e.g. after checkpointing on SIGUSR1) is put back in the queue automatically.
#   cred_expire=10: a requeued job may restart after this many seconds (default 120 s).
#   batch_sched_delay=0,sched_interval=2,bf_interval=5: jobs start ~1 s after submission, not ~3-60 s.
#   SlurmUser=root: a private test cluster; no slurm-owned state to fix up.
#   SlurmdParameters=config_overrides: slurmd trusts the config's CPUs rather than draining the node.
slurm_common_conf() {
    cat <<'CONF'
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=pmi2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
ReturnToService=2
JobRequeue=1
RequeueExit=75
MinJobAge=600
KillWait=10
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
CONF
}
