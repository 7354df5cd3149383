#!/usr/bin/env bash
# Cost of encrypting every resource (`*.*`, the default): API creates/s of configmaps and
# namespaces with secretbox for `*.*` beside identity for `*.*`, same binary, same store,
# in alternating runs. h2load (Debian nghttp2-client) over HTTP/2 + TLS, 16 clients, creates
# with generateName; each configuration gets a fresh embedded store. Prints the median of
# `repeats` runs per row and the ratio encrypted / identity.
# PROVIDERS="identity secretbox kms" adds KMS v2 through `atrest kms-plugin` (key file) on a
# unix socket; the script then also counts the plugin's Encrypt/Decrypt calls per run.
# Usage: encrypt-all-cost.sh [requests-per-run] [repeats]  (build first: cargo build --release -p atrest)
set -euo pipefail
requests="${1:-20000}"; repeats="${2:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
atrest="${CARGO_TARGET_DIR:-$here/../../target}/release/atrest"
[ -x "$atrest" ] || { echo "build first: cargo build --release -p atrest" >&2; exit 1; }
command -v h2load >/dev/null || { echo "needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
work="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
key=$(head -c 32 /dev/urandom | base64)
providers="${PROVIDERS:-identity secretbox}"
plugin_pid=""
case " $providers " in *" kms "*)
  "$atrest" kms-plugin --listen "unix://$work/kms.sock" --kek-file "$work/kek" --create-key >"$work/plugin.log" 2>&1 &
  plugin_pid=$!
  trap 'kill $plugin_pid 2>/dev/null; cleanup' EXIT
  for _ in $(seq 100); do [ -S "$work/kms.sock" ] && break; sleep 0.1; done ;;
esac
for p in $providers; do
  { echo "apiVersion: apiserver.config.k8s.io/v1"; echo "kind: EncryptionConfiguration"; echo "resources:"
    echo "  - resources: ['*.*']"; echo "    providers:"
    if [ "$p" = secretbox ]; then echo "      - secretbox: {keys: [{name: k, secret: \"$key\"}]}"; fi
    if [ "$p" = kms ]; then echo "      - kms: {apiVersion: v2, name: bench, endpoint: \"unix://$work/kms.sock\"}"; fi
    echo "      - identity: {}"; } > "$work/$p.yaml"
done
chmod 600 "$work"/*.yaml
printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"cm-"},"data":{"k":"%s"}}' "$(head -c 700 /dev/zero | tr '\0' 'x')" > "$work/cm.json"
printf '{"apiVersion":"v1","kind":"Namespace","metadata":{"generateName":"ns-"}}' > "$work/ns.json"
: > "$work/results"
run() { # provider resource path body
  local dir="$work/data-$1-$2-$RANDOM" port=$((20000 + RANDOM % 20000))
  "$atrest" serve --data-dir "$dir" --secure-port "$port" --encryption-provider-config "$work/$1.yaml" >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -f "$dir/admin.token" ] && curl -sk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  local token; token=$(cat "$dir/admin.token")
  local calls0=0; [ -n "$plugin_pid" ] && calls0=$(grep -cE ' (encrypt|decrypt) ' "$work/plugin.log" || true)
  local cpu0; cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
  h2load -n "$requests" -c 16 -m 1 -d "$4" -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
        "https://127.0.0.1:$port$3" > "$work/h2load.out" 2>&1
  local cpu1; cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
  if [ -n "$plugin_pid" ]; then
    echo "plugin Encrypt/Decrypt calls during $requests $1 $2 creates: $(( $(grep -cE ' (encrypt|decrypt) ' "$work/plugin.log" || true) - calls0 ))" >&2
  fi
  local rps ok
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$work/h2load.out")
  ok=$(awk '/^status codes:/ {print $3}' "$work/h2load.out")
  [ "$ok" = "$requests" ] || { echo "not every create succeeded:" >&2; cat "$work/h2load.out" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  # Server CPU (user + system) per create, in microseconds: steadier than throughput on a
  # machine shared with other work.
  echo "$1 $2 $rps $(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / requests ))" >> "$work/results"
}
for _ in $(seq "$repeats"); do
  for p in $providers; do
    run "$p" configmaps /api/v1/namespaces/default/configmaps "$work/cm.json"
    run "$p" namespaces /api/v1/namespaces "$work/ns.json"
  done
done
python3 - "$work/results" "$repeats" "$requests" $providers <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    p, r, rps, cpu = line.split()
    rows.setdefault((p, r), []).append(float(rps))
    rows.setdefault((p, r, "cpu"), []).append(float(cpu))
print(f"{sys.argv[3]} creates per run, 16 clients, HTTP/2 + TLS, embedded store; median of {sys.argv[2]} runs")
others = [p for p in sys.argv[4:] if p != "identity"]
print("| resource | provider | identity creates/s | creates/s | ratio | identity server CPU µs/create | server CPU µs/create | CPU ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in ("configmaps", "namespaces"):
    i = statistics.median(rows[("identity", r)]); ic = statistics.median(rows[("identity", r, "cpu")])
    for p in others:
        s = statistics.median(rows[(p, r)]); sc = statistics.median(rows[(p, r, "cpu")])
        print(f"| {r} | {p} | {i:,.0f} | {s:,.0f} | {s/i:.3f} | {ic:.0f} | {sc:.0f} | {sc/ic:.3f} |")
PY
