#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `resnetlab sweep --launcher slurm` (issue 18).
#
# As root: installs Debian's slurm-wlm and munge when missing, writes a minimal /etc/slurm/slurm.conf for
# localhost (only where none exists, or where this script wrote it), starts munged, slurmctld and slurmd as plain
# background daemons (containers have no systemd and often no writable cgroups: proctrack/linuxproc and
# task/none need neither), and waits until `sinfo` shows the node idle. Idempotent: with the cluster up already,
# it does nothing. Exit 0 = the cluster is up; otherwise one line on stderr says why.
#
# Logs: /var/log/slurm/{slurmctld,slurmd}.log. Stop it with tests/slurm/stop_cluster.sh.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by resnetlab tests/slurm/start_cluster.sh"
PARTITION=debug
WAIT_S=${SLURM_START_WAIT_S:-60}

die() { echo "start_cluster.sh: $*" >&2; exit 1; }

node_idle() { sinfo -h -N -n localhost -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

# slurm.conf for this one node, with its real CPUs and memory
write_conf() {
  local mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 512 ))
  cat <<END
$MARK
ClusterName=resnetlab
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire + 1 s before it may start again (default 120 s): short for the tests
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no systemd and no writable cgroups in a container: track processes by parentage, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# a tiny cluster for tests: schedule at once, keep finished jobs visible to scontrol for 10 minutes
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=600
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
END
}

if command -v sinfo >/dev/null && node_idle; then
  # up already: nothing to do, unless it runs on an older version of our slurm.conf
  if ! grep -qsF "$MARK" "$CONF" || write_conf | cmp -s - "$CONF"; then exit 0; fi
  write_conf > "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  scontrol reconfigure || die "scontrol reconfigure failed (see /var/log/slurm/slurmctld.log)"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "the local Slurm cluster needs root (to install packages and start munged/slurmd)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } ||
    die "apt-get install slurm-wlm munge failed"
fi

# --- munge: a key, its directories, the daemon (it refuses to run as root, so it runs as user munge)
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null ||
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --force || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf (only ours is ever replaced)
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script; start that cluster yourself (not touching it)"
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
write_conf > "$CONF.tmp" && mv "$CONF.tmp" "$CONF"

# --- the daemons (-i: ignore state files of an earlier slurmctld; no systemd: they daemonize themselves)
if ! scontrol ping 2>/dev/null | grep -q UP; then
  slurmctld -i || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! pgrep -x slurmd >/dev/null; then
  slurmd -N localhost || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi
for _ in $(seq $((WAIT_S * 5))); do
  if node_idle; then exit 0; fi
  # a node left DOWN or DRAINED by an earlier run of the daemons comes back
  case "$(sinfo -h -N -n localhost -o %t 2>/dev/null)" in
    down*|drain*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
die "the node did not become idle in ${WAIT_S} s (sinfo: $(sinfo -h -N -o '%N %t' 2>&1 | head -1); see /var/log/slurm/)"
