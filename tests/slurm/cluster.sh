#!/usr/bin/env bash
# A real one-node SLURM cluster on this (Debian, root) machine, for the workflow's SLURM test.
#   tests/slurm/cluster.sh start   install munge/slurmctld/slurmd from Debian, write slurm.conf,
#                                  start the daemons, wait until the node is idle
#   tests/slurm/cluster.sh stop    stop the daemons by the PIDs in their pidfiles
# Fails loudly (non-zero exit, message on stderr) when the packages cannot be installed or a daemon
# does not come up. Setup notes: ../shared/notes/local-slurm.md.
set -euo pipefail

die() { echo "slurm-cluster: error: $*" >&2; exit 1; }

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages and starts daemons)"
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
        command -v apt-get >/dev/null || die "apt-get not found: cannot install munge/slurm (Debian needed)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null 2>&1 \
            || die "apt-get install munge slurmctld slurmd slurm-client failed"
    fi
    local host mem cpus
    host=$(hostname -s)
    # the machine's CPUs (nproc alone follows OMP_NUM_THREADS, which the tests set to 1 per worker)
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    mem=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
    mkdir -p /run/munge /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
    chown munge:munge /run/munge 2>/dev/null || true
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    cat > /etc/slurm/slurm.conf <<EOF
ClusterName=localcluster
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
MailProg=/bin/true
DefMemPerCPU=500
AccountingStorageType=accounting_storage/none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged --force || die "munged did not start"
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld -i || die "slurmctld did not start"
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd || die "slurmd did not start"
    # wait (up to 30 s) until the node takes jobs, checking every 0.2 s
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then
            echo "slurm-cluster: node ${host} is up (${cpus} CPUs, ${mem} MB)"
            return 0
        fi
        sleep 0.2
    done
    sinfo >&2 || true
    die "the node did not become idle within 30 s (see /var/log/slurm/)"
}

stop() {
    local f pid
    for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
        if [ -s "$f" ]; then
            pid=$(cat "$f")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # gone within 10 s
        fi
    done
    if [ -s /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
    echo "slurm-cluster: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
