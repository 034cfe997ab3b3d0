#!/usr/bin/env bash
# Run the 2-process gloo job of tests/test_distributed.py (the ddp_and_single fixture's torchrun command) N times in a
# row, optionally beside L busy-looping processes, and count the runs that did not exit cleanly: a non-zero exit, or
# "terminate called" / "Fatal Python error" / a traceback / a segfault in the output (an abort at exit).
#
#   tests/stress_distributed.sh [-n RUNS] [-l BUSY_PROCESSES] [-o LOG_DIR]
#
# Defaults: 20 runs, no load, logs in a temporary directory (kept when a run fails). Exit status 0 only when every
# run was clean. The same check, without load, is the slow test test_torchrun_exits_cleanly_20_times.
set -u

runs=20
load=0
logs=""
while getopts "n:l:o:h" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    l) load=$OPTARG ;;
    o) logs=$OPTARG ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
python=${PYTHON:-python}
[ -n "$logs" ] || logs=$(mktemp -d -t onebit-stress-XXXXXX)
mkdir -p "$logs"

busy=()
cleanup() {
  for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${busy[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 "$load"); do
  "$python" -c "while True: pass" &
  busy+=("$!")
done

free_port() { "$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

clean=0
failed=0
start=$SECONDS
for i in $(seq 1 "$runs"); do
  out="$logs/run$i"
  rm -rf "$out"
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 timeout 600 \
    "$python" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$(free_port)" \
    -m onebit train --smoke data.limit_train=128 data.limit_val=64 data.batch_size=32 'stages.*.epochs=1' \
    sync_bn=true threads=1 --out "$out" >"$out.log" 2>&1
  rc=$?
  crash=$(grep -m1 -o -E "terminate called[a-z ]*|Fatal Python error: [A-Za-z ]*|Traceback \(most recent call last\)|Segmentation fault" "$out.log")
  if [ "$rc" -eq 0 ] && [ -z "$crash" ]; then
    clean=$((clean + 1))
    rm -rf "$out" "$out.log"
  else
    failed=$((failed + 1))
    echo "run $i: exit $rc${crash:+, $crash} (log: $out.log)"
  fi
done
echo "stress_distributed: $clean/$runs clean, $failed failed, load $load busy processes, $((SECONDS - start)) s"
[ "$failed" -eq 0 ] && [ "$logs" != "" ] && rmdir "$logs" 2>/dev/null
[ "$failed" -eq 0 ]
