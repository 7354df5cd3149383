#!/usr/bin/env bash
# Operations benchmark behind BENCHMARKS.md "## Operations": `atrest status` and
# `atrest reencrypt` on a local single-member etcd holding N secrets of 1 KiB (default
# 20,000), beside the reference measured in the same run: the same values written back as
# plain batched transactions (128 puts per txn, 4 writers) through etcd's JSON gateway and
# over gRPC. Wall time and peak RSS come from GNU time. Each round reseeds the store with
# values on the old key; the printed row per figure is the median of `repeats` rounds.
# Usage: run-ops-bench.sh [objects] [repeats]      (build first: cargo build --release -p atrest -p atrest-load)
set -euo pipefail
objects="${1:-20000}"
repeats="${2:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../../target}"
atrest="$target/release/atrest"; load="$target/release/atrest-load"
for b in "$atrest" "$load"; do [ -x "$b" ] || { echo "build first: cargo build --release -p atrest -p atrest-load" >&2; exit 1; }; done
work="$(mktemp -d)"; etcd_pid=""
cleanup() { [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

old_key=$(head -c 32 /dev/urandom | base64); new_key=$(head -c 32 /dev/urandom | base64)
cat >"$work/old.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox: {keys: [{name: old, secret: "$old_key"}]}
YAML
cat >"$work/new.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [{name: new, secret: "$new_key"}]}
      - secretbox: {keys: [{name: old, secret: "$old_key"}]}
YAML
chmod 600 "$work"/*.yaml

start_etcd() {
  [ -n "$etcd_pid" ] && { kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; }
  rm -rf "$work/etcd"
  port=$((20000 + RANDOM % 20000)); peer=$((port + 1))
  /usr/bin/etcd --name bench --data-dir "$work/etcd" --quota-backend-bytes=8589934592 \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
  url="http://127.0.0.1:$port"
}

timed() { # name command... -> appends "name seconds max_rss_kb exit" to results
  local name="$1"; shift
  local code=0
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out.$name" 2>"$work/err.$name" || code=$?
  read -r secs rss < <(tail -n 1 "$work/time")
  echo "$name $secs $rss $code" >>"$work/results"
}

: >"$work/results"
for round in $(seq "$repeats"); do
  start_etcd
  "$load" seed --etcd-servers "$url" --encryption-provider-config "$work/old.yaml" --objects "$objects" 2>/dev/null
  for via in gateway grpc; do
    "$load" batch-write --etcd-server "$url" --via "$via" >"$work/batch.json"
    secs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/batch.json")
    echo "batch-$via $secs 0 0" >>"$work/results"
  done
  timed status-before "$atrest" status -o json --etcd-servers "$url" --encryption-provider-config "$work/new.yaml"
  timed reencrypt "$atrest" reencrypt -o json --etcd-servers "$url" --encryption-provider-config "$work/new.yaml"
  timed status-after "$atrest" status -o json --etcd-servers "$url" --encryption-provider-config "$work/new.yaml"
  python3 - "$work" "$objects" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
before = json.load(open(f"{work}/out.status-before"))
after = json.load(open(f"{work}/out.status-after"))
rep = json.load(open(f"{work}/out.reencrypt"))
sec = lambda a: next(r for r in a["resources"] if r["resource"] == "secrets")
assert sec(before)["stale"] == n, sec(before)
assert rep["rewritten"] == n and rep["complete"], rep
assert after["upToDate"] and sec(after)["current"] == n, sec(after)
PY
done

python3 - "$work/results" "$objects" "$repeats" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, secs, rss, code = line.split()
    rows.setdefault(name, []).append((float(secs), int(rss), int(code)))
n, repeats = int(sys.argv[2]), sys.argv[3]
def med(name):
    runs = sorted(rows[name])
    return runs[len(runs) // 2]
gw = n / med("batch-gateway")[0]
print(f"objects: {n}, 1 KiB secrets, single-member etcd; median of {repeats} rounds")
print("| figure | objects/s | ratio to gateway writes | peak RSS MiB |")
print("|---|---:|---:|---:|")
for name, label in [("batch-gateway", "reference: batched puts, JSON gateway (128/txn, 4 writers)"),
                    ("batch-grpc", "reference: batched puts, gRPC (128/txn, 4 writers)"),
                    ("status-before", "`atrest status` (all stale)"),
                    ("reencrypt", "`atrest reencrypt` (scan + rewrite + verify)"),
                    ("status-after", "`atrest status` (all current)")]:
    secs, rss, code = med(name)
    rate = n / secs
    mem = f"{rss/1024:.0f}" if rss else "-"
    print(f"| {label} | {rate:,.0f} | {rate/gw:.2f}x | {mem} |")
PY
