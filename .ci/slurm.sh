#!/usr/bin/env bash
# Install Debian's Slurm and MUNGE, configure a single-node cluster for this host (slurmctld and
# slurmd on 127.0.0.1, no systemd, no cgroups), start the daemons and wait until `sinfo` shows the
# node idle.  Safe to run again: every step checks before it acts, and a running cluster is kept.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
PARTITION=${SLURM_PARTITION:-debug}
WAIT_SECONDS=${SLURM_WAIT_SECONDS:-120}
NODE=$(hostname -s)

log() { echo "slurm.sh: $*"; }

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

node_ready() {
    case "$(node_state)" in
        idle|idle~|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

# --- packages -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -q
    apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends slurm-wlm munge
fi

# --- munge ----------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null
fi

# --- slurm.conf -----------------------------------------------------------------------------
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
# `slurmd -C` prints this host's NodeName line (CPUs, sockets, cores, RealMemory) as slurmd sees it.
HW=$(slurmd -C | head -1 | sed -e "s/^NodeName=[^ ]*//")
NEW_CONF=$(cat <<CONF
# Written by .ci/slurm.sh: a single-node cluster on this host for the iworkflow tests.
ClusterName=iworkflow
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# start array tasks as soon as a slot frees (the default batch_sched_delay waits 3 s between rounds)
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
MaxArraySize=10001
MaxJobCount=100000
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 $HW State=UNKNOWN
# OverSubscribe: up to 4 jobs share a core, so short test jobs run 8 at a time on 2 cores
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
CONF
)
if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$NEW_CONF" ] && node_ready; then
    log "node $NODE already $(node_state) in partition $PARTITION"
    exit 0
fi
RESTART=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    log "writing $CONF for node $NODE:$HW"
    printf '%s\n' "$NEW_CONF" > "$CONF"
    RESTART=1
fi

# --- daemons --------------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$RESTART" = 1 ]; then
    for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
        if running "$pidfile"; then kill "$(cat "$pidfile")"; sleep 1; fi
    done
fi
if ! running /run/slurm/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld
fi
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
if ! running /run/slurm/slurmd.pid; then
    log "starting slurmd"
    slurmd
fi

deadline=$((SECONDS + WAIT_SECONDS))
while ! node_ready; do
    state=$(node_state)
    case "$state" in
        down*|drain*|drained*|fail*)
            log "node $NODE is $state; resuming it"
            scontrol update NodeName="$NODE" State=RESUME || true ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
        log "node $NODE not idle after ${WAIT_SECONDS}s (state: ${state:-none})"
        sinfo -R || true
        tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log || true
        exit 1
    fi
    sleep 1
done
log "node $NODE is $(node_state) in partition $PARTITION"
sinfo
