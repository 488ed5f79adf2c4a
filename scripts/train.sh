#!/usr/bin/env bash
# Launch training: scripts/train.sh config=PATH gpus=0,1|cpu [nproc=N] [base_config=PATH] [debug=true]
#                  [dry_run=true] [nnodes=N node_rank=R master_addr=HOST master_port=P] [print_only=true]
# One GPU -> one process; several -> torchrun across them; gpus=cpu -> CPU with configs/cpu.yaml's keys
# merged on top of the config (nproc=N: N CPU processes under torchrun, gloo). `python -m src.sft` is
# the single entry it calls. Prints the settings and the exact command, tees the log into
# <output_dir>/logs/, and exits with the training's exit code. print_only=true prints and stops.
set -euo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
config="" gpus="" nproc="" base_config="" debug=false dry_run=false print_only=false
nnodes=1 node_rank=0 master_addr=127.0.0.1 master_addr_given=false master_port=29500 master_port_given=false
for arg in "$@"; do
  case "$arg" in
    config=*) config=${arg#*=} ;;
    gpus=*) gpus=${arg#*=} ;;
    nproc=*) nproc=${arg#*=} ;;
    base_config=*) base_config=${arg#*=} ;;
    debug=*) debug=${arg#*=} ;;
    dry_run=*) dry_run=${arg#*=} ;;
    print_only=*) print_only=${arg#*=} ;;
    nnodes=*) nnodes=${arg#*=} ;;
    node_rank=*) node_rank=${arg#*=} ;;
    master_addr=*) master_addr=${arg#*=}; master_addr_given=true ;;
    master_port=*) master_port=${arg#*=}; master_port_given=true ;;
    -h|--help|help) usage ;;
    *) echo "train.sh: unknown argument '$arg' (expected key=value: config, gpus, nproc, base_config, debug, dry_run, nnodes, node_rank, master_addr, master_port, print_only)" >&2; exit 2 ;;
  esac
done
[ -n "$config" ] || { echo "train.sh: config=PATH is required" >&2; usage; }
[ -n "$gpus" ] || { echo "train.sh: gpus=0,1 (or gpus=cpu) is required" >&2; usage; }
for flag in debug dry_run print_only; do
  case "${!flag}" in true|false) ;; *) echo "train.sh: $flag must be true or false, got '${!flag}'" >&2; exit 2 ;; esac
done
for num in nnodes node_rank master_port ${nproc:+nproc}; do
  [[ "${!num}" =~ ^[0-9]+$ ]] || { echo "train.sh: $num must be a whole number, got '${!num}'" >&2; exit 2; }
done
# Beyond 9 digits a value is surely a typo (and bash arithmetic would overflow on it): refused as out of range.
[ "${#nnodes}" -le 9 ] && [ "$((10#$nnodes))" -ge 1 ] || { echo "train.sh: nnodes must be at least 1, got '$nnodes'" >&2; exit 2; }
if [ "${#node_rank}" -gt 9 ] || [ "$((10#$node_rank))" -ge "$((10#$nnodes))" ]; then
  echo "train.sh: node_rank ($node_rank) must be below nnodes ($nnodes): the nodes are numbered 0 to nnodes-1" >&2; exit 2
fi
# Several nodes meet at node 0's address. The default, 127.0.0.1, is each node itself: a node other than 0 waited
# there for a node 0 that never came, silently, until torchrun's rendezvous timeout (minutes).
if [ "$((10#$nnodes))" -gt 1 ] && [ "$master_addr_given" = false ]; then
  echo "train.sh: master_addr is required with nnodes=$nnodes (the default 127.0.0.1 is each node itself: the nodes would wait for one another until torchrun's timeout); give master_addr=HOST, the address of the node with node_rank=0, reachable from every node and the same on every node (a loopback address such as 127.0.0.1 only when every node runs on this machine)" >&2; exit 2
fi
[ -n "$master_addr" ] || { echo "train.sh: master_addr must not be empty: give the address of the node with node_rank=0" >&2; exit 2; }
if [ "${#master_port}" -gt 5 ] || [ "$((10#$master_port))" -lt 1 ] || [ "$((10#$master_port))" -gt 65535 ]; then
  echo "train.sh: master_port must be a TCP port from 1 to 65535, got '$master_port'" >&2; exit 2
fi

# Paths are relative to where the user stands; the command runs from the repository root.
abspath() { (cd "$(dirname "$1")" 2>/dev/null && echo "$(pwd)/$(basename "$1")") || echo "$1"; }
config=$(abspath "$config")
[ -f "$config" ] || { echo "train.sh: config file not found: $config" >&2; exit 2; }
sft_args=(--config "$config")
if [ -n "$base_config" ]; then
  base_config=$(abspath "$base_config")
  [ -f "$base_config" ] || { echo "train.sh: base_config file not found: $base_config" >&2; exit 2; }
  sft_args+=(--base_config "$base_config")
fi
[ "$debug" = true ] && sft_args+=(--debug)
[ "$dry_run" = true ] && sft_args+=(--dry-run)

python=${PYTHON:-"$repo/.venv/bin/python"}
[ -x "$python" ] || python=python3
if [ "$gpus" = cpu ]; then
  # CPU: no GPU visible, configs/cpu.yaml's keys on top of the config, N processes (gloo) when asked.
  [ -n "$nproc" ] || nproc=1
  [ "$nproc" -ge 1 ] || { echo "train.sh: nproc must be at least 1, got '$nproc'" >&2; exit 2; }
  env_vars=(CUDA_VISIBLE_DEVICES=)
  sft_args+=(--device cpu)
else
  [[ "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "train.sh: gpus must be 'cpu' or a list like 0,1 (got '$gpus')" >&2; exit 2; }
  IFS=, read -r -a gpu_list <<< "$gpus"
  declare -A seen_gpu=()
  for gpu in "${gpu_list[@]}"; do
    id=$((10#$gpu))
    [ -z "${seen_gpu[$id]:-}" ] || { echo "train.sh: gpus lists GPU $id twice (got '$gpus'): each GPU runs one process; list distinct ids" >&2; exit 2; }
    seen_gpu[$id]=1
  done
  # gpus= names physical ids and replaces CUDA_VISIBLE_DEVICES. One already set to ids (a scheduler's
  # allocation: SLURM, a container) lists the GPUs this job may use: an id outside it is another job's GPU.
  allowed=${CUDA_VISIBLE_DEVICES:-}
  if [[ "$allowed" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    IFS=, read -r -a allowed_list <<< "$allowed"
    declare -A allowed_gpu=()
    for gpu in "${allowed_list[@]}"; do allowed_gpu[$((10#$gpu))]=1; done
    for gpu in "${gpu_list[@]}"; do
      [ -n "${allowed_gpu[$((10#$gpu))]:-}" ] || { echo "train.sh: gpus=$gpus names GPU $((10#$gpu)), which CUDA_VISIBLE_DEVICES=$allowed in the environment (a scheduler's allocation?) does not list; gpus= takes physical GPU ids and replaces CUDA_VISIBLE_DEVICES: choose from $allowed, or unset CUDA_VISIBLE_DEVICES" >&2; exit 2; }
    done
  fi
  if [ -n "$nproc" ]; then
    echo "train.sh: nproc=$nproc is for gpus=cpu; with gpus=$gpus the number of GPUs listed sets the processes per node (${#gpu_list[@]})" >&2; exit 2
  fi
  nproc=${#gpu_list[@]}
  env_vars=(CUDA_VISIBLE_DEVICES="$gpus")
fi
if [ "$nproc" -eq 1 ] && [ "$nnodes" -eq 1 ]; then
  cmd=("$python" -m src.sft "${sft_args[@]}")
else
  # torchrun's node 0 listens on master_port: a second job on this machine with the same port died with a
  # torch traceback (EADDRINUSE). One node without master_port= takes a free port; a port given is checked.
  port_free() { "$python" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)
print(s.getsockname()[1])
PY
  }
  if [ "$nnodes" -eq 1 ] && [ "$master_port_given" = false ]; then
    master_port=$(port_free 0) || { echo "train.sh: found no free TCP port for torchrun; give master_port=P" >&2; exit 2; }
  elif [ "$node_rank" -eq 0 ] && ! port_free "$master_port" > /dev/null; then
    every=""; [ "$nnodes" -gt 1 ] && every=" (the same on every node)"
    echo "train.sh: master_port $master_port is in use on this machine (another job's torchrun?): node 0 listens on it; choose another master_port=P$every" >&2; exit 2
  fi
  env_vars+=(NPROC_PER_NODE="$nproc" NNODES="$nnodes" NODE_RANK="$node_rank" MASTER_ADDR="$master_addr" MASTER_PORT="$master_port")
  cmd=("$python" -m torch.distributed.run --nproc_per_node="$nproc" --nnodes="$nnodes" --node_rank="$node_rank"
       --master_addr="$master_addr" --master_port="$master_port" -m src.sft "${sft_args[@]}")
fi

echo "== train.sh"
echo "config:      $config"
[ -n "$base_config" ] && echo "base_config: $base_config"
echo "gpus:        $gpus (processes per node: $nproc, nodes: $nnodes, node rank: $node_rank)"
if [ "$nnodes" -gt 1 ]; then
  loopback=""
  shopt -s nocasematch
  [[ "$master_addr" =~ ^(127\.[0-9.]+|localhost|localhost\.localdomain|::1|\[::1\])$ ]] && loopback=" (a loopback address: every node must run on this machine)"
  shopt -u nocasematch
  echo "master:      $master_addr:$master_port$loopback"
fi
printf 'command:     '; printf '%q ' env "${env_vars[@]}" "${cmd[@]}"; echo
[ "$print_only" = true ] && exit 0

cd "$repo"
device_args=()
[ "$gpus" = cpu ] && device_args=(--device cpu)
output_dir=$("$python" -m src.config get --config "$config" ${base_config:+--base_config "$base_config"} "${device_args[@]}" training.output_dir) || exit $?
log_dir="$output_dir/logs"
mkdir -p "$log_dir"
# Never two launches on one log: the second, this shell's pid, and noclobber (an existing name is an error).
log="$log_dir/train-$(date +%Y%m%d-%H%M%S)-$$-rank$node_rank.log"
( set -o noclobber; : > "$log" ) 2>/dev/null || { echo "train.sh: log $log exists already; not overwriting it" >&2; exit 2; }
echo "log:         $log"
set +e
# Ctrl-C reaches the training (it prints where it stopped and how to resume), not tee: tee ignores SIGINT so
# that message still reaches the terminal and the log; this shell waits for the training, then reports.
# SIGTERM or SIGHUP sent to this shell alone (`kill`, `timeout`, a supervisor) is passed on to the training:
# a foreground pipeline would defer the trap until the training ended, and without a trap this shell died and
# left torchrun and its workers training on, holding the run lock. So the training runs in the background (its
# SIGINT and SIGQUIT set back to default, which a background command would ignore) and this shell waits.
interrupted=false signalled=""
exec 3> >(trap '' INT TERM HUP; exec tee -a "$log")
tee_pid=$!
exec 4<&0  # a background command would read /dev/null: the training keeps this shell's input (breakpoint())
(trap - INT QUIT; exec env "${env_vars[@]}" "${cmd[@]}") <&4 >&3 2>&1 &
train_pid=$!
exec 4<&-
trap 'interrupted=true' INT
trap 'signalled=TERM; kill -TERM "$train_pid" 2>/dev/null' TERM
trap 'signalled=HUP; kill -HUP "$train_pid" 2>/dev/null' HUP
while :; do
  wait "$train_pid"
  status=$?
  kill -0 "$train_pid" 2>/dev/null || break  # still running: the wait was cut short by a signal's trap
done
trap - INT TERM HUP
exec 3>&-
wait "$tee_pid" 2>/dev/null  # the log whole before the last line
report() { echo "$1" | (trap '' INT TERM HUP; exec tee -a "$log") >&2; }
if [ -n "$signalled" ]; then
  # The training's own code for the signal (143 for SIGTERM, 129 for SIGHUP), whatever torchrun made of it.
  [ "$status" -eq 0 ] || status=$((128 + $(kill -l "$signalled")))
  report "train.sh: stopped by SIG$signalled (exit $status); the whole log: $log"
elif [ "$interrupted" = true ]; then
  # One process ends with 130 on Ctrl-C; torchrun with 1 (its SignalException): an interrupted run exits 130
  # either way, so a caller can tell it from a failure.
  [ "$status" -eq 0 ] || status=130
  report "train.sh: interrupted (exit $status); the whole log: $log"
fi
exit "$status"
