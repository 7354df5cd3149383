#!/usr/bin/env bash
# Raw-store benchmark behind BENCHMARKS.md "## Raw store": the embedded SQLite store and a
# single-member etcd (default settings, fsync on), both on the same local disk, driven by
# `atrest-load store` with 1 KiB values. Each row is run `repeats` times and the run with the
# median throughput is printed (the machine is shared; single runs are noisy).
# Usage: run-store-bench.sh [seconds-per-run] [repeats]
set -euo pipefail
seconds="${1:-10}"
repeats="${2:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../../target}"
load="$target/release/atrest-load"
[ -x "$load" ] || { echo "build first: cargo build --release -p atrest-load" >&2; exit 1; }
work="$(mktemp -d)"
etcd_pid=""
cleanup() { [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

client_port=$((20000 + RANDOM % 20000)); peer_port=$((client_port + 1))
/usr/bin/etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$client_port/health" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$work/row.py" <<'PY'
import json, sys
runs = [json.loads(line) for line in sys.stdin if line.strip()]
runs.sort(key=lambda run: run["ops_per_second"])
r = runs[len(runs) // 2]
l = r["latency_ms"]
ops = r["ops_per_second"]
print("| %s | %s | %d | %s | %.2f | %.2f | %.1f | %d |" % (
    sys.argv[1], r["op"], r["concurrency"], "%.0f" % ops if ops >= 10 else "%.2f" % ops,
    l["p50"], l["p99"], l["max"], r["errors"]))
PY

run() { # backend-name op concurrency [extra atrest-load args...]
  local backend="$1" op="$2" conc="$3" target_args
  shift 3
  if [ "$backend" = embedded ]; then target_args=(--data-dir "$work/embedded"); else target_args=(--etcd-servers "http://127.0.0.1:$client_port"); fi
  for _ in $(seq "$repeats"); do
    "$load" store "${target_args[@]}" --op "$op" --concurrency "$conc" --value-size 1024 --duration "$seconds" -o json "$@" \
      | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'
  done | python3 "$work/row.py" "$backend"
}
echo "| backend | op | concurrency | ops/s | p50 ms | p99 ms | max ms | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for backend in embedded etcd; do
  for conc in 1 16 64; do run "$backend" put "$conc"; done
  run "$backend" update 16
  for conc in 1 16; do run "$backend" get "$conc"; done
  # One op = a complete paginated list (500 per page, one revision) of 100,000 keys.
  run "$backend" list 1 --keys 100000 --page-size 500
done
