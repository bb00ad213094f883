#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, and the LEAF demo run through the cluster
# profile (profiles/slurm) on it: an end-to-end test of the profile without a cluster.
#
#   sudo scripts/slurm_local_cluster.sh          # up + demo: install, start, run the demo
#   sudo scripts/slurm_local_cluster.sh up       # install slurm-wlm + munge, configure, start, srun check
#   sudo scripts/slurm_local_cluster.sh demo     # run the (shortened) demo through the profile
#   sudo scripts/slurm_local_cluster.sh status   # sinfo / squeue
#   sudo scripts/slurm_local_cluster.sh stop     # stop the daemons this script started
#
# Debian (bookworm ships Slurm 22.05), as root. Nothing leaves the machine: slurmctld and
# slurmd listen on the address the host name resolves to (NoCtldInAddrAny,NoInAddrAny;
# the script warns when that is not a loopback address) and munge uses a local socket.
# It refuses to touch an /etc/slurm/slurm.conf it did not write (a real cluster node).
#
# Settings (environment):
#   LEAF_SLURM_STATE       state dir (pids, logs, derived profile)   [/var/lib/leaf-slurm-local]
#   LEAF_SLURM_DEMO_CONFIG config merged over config/demo.yaml       [scripts/slurm_local_demo.yaml]
#   LEAF_SLURM_SCATTER     teacher shards of the local run           [4]
#   LEAF_PYTHON            python with snakemake + the slurm plugin  [.venv/bin/python]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LEAF_SLURM_STATE:-/var/lib/leaf-slurm-local}
DEMO_CONFIG=${LEAF_SLURM_DEMO_CONFIG:-$REPO/scripts/slurm_local_demo.yaml}
SCATTER=${LEAF_SLURM_SCATTER:-4}
PY=${LEAF_PYTHON:-$REPO/.venv/bin/python}
CONF=/etc/slurm/slurm.conf
MARK="# Written by LEAF scripts/slurm_local_cluster.sh"
PARTITION=leaf
NODE=$(hostname -s)
STARTED=$STATE/started          # "<daemon> <pid>" of each daemon this script started
SQUEUE_FORMAT='%.5i %.9P %.46k %.10T %.6M %.4C %.7m %.9l'  # id partition comment state time cpus mem limit

log() { printf '[slurm-local] %s\n' "$*"; }
die() { printf '[slurm-local] error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "run as root: it installs packages and writes /etc/slurm and /etc/munge"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        log "slurm-wlm and munge are installed (slurm $(slurm_version))"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: this script installs Debian packages"
    log "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "installed slurm $(slurm_version)"
}

slurm_version() { dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo "(not from a Debian package)"; }

# A daemon counts as ours only if this script recorded its pid and it still runs that program.
running_pid() {  # running_pid <daemon>: pid of a running <daemon> (zombies do not count), or nothing
    ps -e -o pid=,stat=,comm= | awk -v name="$1" '$3 == name && $2 !~ /^Z/ {print $1; exit}'
}

pid_from_file() {  # pid_from_file <daemon> <pidfile>: the pid in the file if <daemon> runs it
    local pid
    pid=$(cat "$2" 2>/dev/null || true)
    [ -n "$pid" ] && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$1" ] && echo "$pid" || true
}

record_started() { mkdir -p "$STATE"; echo "$1 $2" >>"$STARTED"; }

setup_munge() {
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key (1 KiB random)"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key /var/lib/munge /var/log/munge /run/munge
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    chmod 755 /run/munge
    local pid
    pid=$(running_pid munged)
    if [ -n "$pid" ]; then
        log "munged already running (pid $pid): using it, and leaving it running on stop"
    else
        runuser -u munge -- /usr/sbin/munged
        for _ in $(seq 20); do
            pid=$(pid_from_file munged /run/munge/munged.pid)
            [ -n "$pid" ] && break
            sleep 0.5
        done
        [ -n "$pid" ] || die "munged did not start (see /var/log/munge/munged.log)"
        record_started munged "$pid"
        log "started munged (pid $pid)"
    fi
    munge -n | unmunge >/dev/null || die "munge -n | unmunge failed: munge cannot authenticate"
    log "munge -n | unmunge: Success"
}

write_slurm_conf() {
    if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster?): not touching it"
    fi
    local cpus mem_mib real_mem
    cpus=$(nproc)
    mem_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    real_mem=$((mem_mib * 9 / 10))          # headroom for the OS and the daemons
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >"$CONF" <<EOF
$MARK
# A single-node test cluster on this host: no accounting, no cgroups, no GPUs.
ClusterName=leaflocal
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# slurmctld, slurmd and srun bind to the address the host name resolves to, not 0.0.0.0
# (the script checks that it is a loopback address).
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Containers without a cgroup hierarchy for Slurm: track processes by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No sacct without accounting: Snakemake polls squeue, which must still list finished
# jobs when it looks (an hour here; the default 300 s loses fast jobs).
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF: node $NODE, $cpus CPUs, RealMemory=$real_mem MiB, partition $PARTITION"
}

check_loopback() {
    local addr
    addr=$(getent ahostsv4 "$NODE" | awk 'NR == 1 {print $1}')
    case "$addr" in
        127.*) log "$NODE resolves to $addr: the daemons listen on loopback only" ;;
        *) log "WARNING: $NODE resolves to '${addr:-nothing}', not loopback: slurmctld/slurmd listen there" ;;
    esac
}

start_daemon() {  # start_daemon <name> <pidfile> <command...>: the daemon forks; its pid file names it
    local name=$1 pidfile=$2 pid
    shift 2
    pid=$(running_pid "$name")
    if [ -n "$pid" ]; then
        grep -qs "^$name $pid\$" "$STARTED" \
            || die "$name is already running (pid $pid) and was not started by this script"
        log "$name already running (pid $pid, ours)"
        return
    fi
    rm -f "$pidfile"
    "$@"
    for _ in $(seq 20); do
        pid=$(pid_from_file "$name" "$pidfile")
        [ -n "$pid" ] && break
        sleep 0.5
    done
    [ -n "$pid" ] || die "$name did not start; see /var/log/slurm/$name.log"
    record_started "$name" "$pid"
    log "started $name (pid $pid)"
}

wait_node_idle() {
    for _ in $(seq 60); do
        state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
        case "$state" in
            idle* | mixed* | allocated*) log "node $NODE is $state"; return ;;
            down* | drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    die "node $NODE not up after 60 s (state: '${state:-unknown}'); see /var/log/slurm/"
}

cmd_up() {
    need_root
    install_packages
    setup_munge
    write_slurm_conf
    check_loopback
    start_daemon slurmctld /run/slurmctld.pid slurmctld -f "$CONF"
    start_daemon slurmd /run/slurmd.pid slurmd -f "$CONF"
    wait_node_idle
    log "listening sockets of the daemons:"
    (ss -ltnp 2>/dev/null || true) | grep -E 'slurmctld|slurmd' | awk '{print "    " $4 "  " $6}'
    log "srun -N1 hostname:"
    timeout 60 srun -N1 hostname | sed 's/^/    /' || die "srun -N1 hostname failed"
    sinfo | sed 's/^/    /'
}

cmd_demo() {
    need_root
    [ -x "$PY" ] || die "$PY not found: create the venv first (make env) or set LEAF_PYTHON"
    sinfo -h >/dev/null 2>&1 || die "no Slurm controller answers: run '$0 up' first"
    local cpus mem_mb run_name profile_dir out
    cpus=$(sinfo -h -n "$NODE" -o '%c' | head -n1)
    # Largest request a job may make: two jobs side by side must fit the node.
    mem_mb=$(($(sinfo -h -n "$NODE" -o '%m' | head -n1 | tr -dc 0-9) / 2))
    profile_dir=$STATE/profile
    "$PY" "$REPO/scripts/slurm_local_profile.py" --cpus "$cpus" --mem-mb "$mem_mb" \
        --jobs $((cpus * 2)) --scatter "$SCATTER" --out "$profile_dir"
    run_name=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["run_name"])' "$DEMO_CONFIG")
    out=$REPO/results/$run_name

    # The profile's placeholders, as a site would set them: this cluster has one partition
    # (for CPU and "GPU" jobs alike) and no accounts (an empty account: sbatch gets no -A).
    export LEAF_SLURM_PARTITION=$PARTITION LEAF_SLURM_GPU_PARTITION=$PARTITION LEAF_SLURM_ACCOUNT=
    export PATH="$(dirname "$PY"):$PATH"
    log "demo: config/demo.yaml + $(realpath --relative-to="$REPO" "$DEMO_CONFIG") -> results/$run_name"
    log "squeue snapshots every 10 s -> $STATE/squeue.log"
    : >"$STATE/squeue.log"
    # %k: the comment the executor plugin sets, rule_<rule>_wildcards_<values>.
    (while sleep 10; do { date '+--- %T'; squeue -o "$SQUEUE_FORMAT %R"; } >>"$STATE/squeue.log" 2>&1; done) &
    local watcher=$! rc=0
    local t0=$SECONDS
    (cd "$REPO" && snakemake --workflow-profile "$profile_dir" \
        --configfile config/demo.yaml "$DEMO_CONFIG" 2>&1) | tee "$STATE/snakemake.log" || rc=$?
    kill "$watcher" 2>/dev/null || true
    log "snakemake exit status $rc after $((SECONDS - t0)) s (log: $STATE/snakemake.log)"
    log "Slurm jobs of this run (squeue keeps finished ones for MinJobAge):"
    squeue -t all -o "$SQUEUE_FORMAT" | sed 's/^/    /'
    [ "$rc" = 0 ] || die "the demo failed; Slurm job logs are under .snakemake/slurm_logs/"
    echo
    cat "$out/summary/table.md"
}

cmd_status() {
    sinfo || true
    squeue -t all || true
    [ -s "$STARTED" ] && { log "started by this script:"; sed 's/^/    /' "$STARTED"; } || true
}

cmd_stop() {
    need_root
    [ -s "$STARTED" ] || { log "nothing recorded in $STARTED: no daemon of ours to stop"; return; }
    # Reverse order of starting: slurmd, slurmctld, munged.
    tac "$STARTED" | while read -r name pid; do
        if [ "$(ps -o comm= -p "$pid" 2>/dev/null)" != "$name" ]; then
            log "$name (pid $pid) is no longer running"
            continue
        fi
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
        log "stopped $name (pid $pid)"
    done
    rm -f "$STARTED"
}

case "${1:-all}" in
    up) cmd_up ;;
    demo) cmd_demo ;;
    all) cmd_up; cmd_demo; log "daemons left running: '$0 status', '$0 stop'" ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    -h | --help | help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (up, demo, all, status, stop)" ;;
esac
