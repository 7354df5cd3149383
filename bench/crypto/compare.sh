#!/usr/bin/env bash
# Compares atrest's providers with the fastest native implementations of the same
# constructions, on this machine, in one run (BENCHMARKS.md, "Providers (crypto core)"):
#
#   - OpenSSL: `openssl speed -evp aes-256-gcm|aes-192-gcm|aes-256-cbc`, encryption
#     and `-decrypt`, at -bytes 1024 and 65536. AES-GCM is run both plain (one streaming
#     EVP context, no per-message IV/AAD/tag: the figure `openssl speed` prints by default) and
#     with `-aead` (per message: set IV, 13-byte AAD, update, tag: what a provider does).
#   - libsodium: bench/crypto/secretbox_bench.c (crypto_secretbox_easy/open_easy), compiled
#     here with gcc against the system libsodium (libsodium-dev); the binary is not kept.
#   - ring and libsodium in-process, and our provider path, in one criterion run
#     (crates/encryption/benches/providers.rs, groups provider/* and baseline/*).
#
# The machine is shared with other builds, so every figure is the least-disturbed one
# observed: criterion's fastest sample (of 100) per benchmark, the C program's best 20 ms
# window, and OpenSSL's own figure, which divides by the process's user CPU time (time
# spent descheduled does not count), taking the better of two passes (before and after
# criterion). The tables also give criterion's median. Nothing leaves this machine.
#
# Usage: bench/crypto/compare.sh [seconds-per-native-measurement, default 1]
# Honours CARGO_TARGET_DIR (default: <repo>/target).
set -euo pipefail

SECS="${1:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR="$TARGET"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

gcc -O2 -o "$WORK/secretbox_bench" "$ROOT/bench/crypto/secretbox_bench.c" \
    $(pkg-config --cflags --libs libsodium 2>/dev/null || echo -lsodium)

# One native pass; appends "<name> <op> <bytes> <GB/s>" lines to $1.
native_pass() {
    local out="$1" bytes cipher mode flags op v
    for bytes in 1024 65536; do
        for cipher in aes-256-gcm aes-192-gcm aes-256-cbc; do
            for mode in plain aead; do
                [[ $cipher == aes-256-cbc && $mode == aead ]] && continue
                [[ $cipher == aes-192-gcm && $mode == plain ]] && continue
                for op in encrypt decrypt; do
                    flags=()
                    [[ $mode == aead ]] && flags+=(-aead)
                    [[ $op == decrypt ]] && flags+=(-decrypt)
                    v=$(openssl speed -mr -seconds "$SECS" -bytes "$bytes" "${flags[@]}" \
                        -evp "$cipher" 2>/dev/null | awk -F: '/^\+F:/ {print $NF / 1e9}')
                    name="openssl-$cipher"
                    [[ $mode == aead ]] && name="$name-aead"
                    echo "$name $op $bytes $v" >>"$out"
                done
            done
        done
        "$WORK/secretbox_bench" "$bytes" "$SECS" | while read -r op b v; do
            echo "libsodium-secretbox-c $op $b $v" >>"$out"
        done
    done
}

echo "== building the criterion bench" >&2
(cd "$ROOT" && cargo bench -p atrest-encryption --bench providers --no-run 2>&1 | tail -1) >&2
echo "== native pass 1" >&2
native_pass "$WORK/native"
echo "== criterion (provider path and in-process baselines)" >&2
export CRITERION_HOME="$WORK/criterion"
(cd "$ROOT" && cargo bench -p atrest-encryption --bench providers -- --noplot >"$WORK/criterion.log" 2>&1)
echo "== native pass 2" >&2
native_pass "$WORK/native"

python3 - "$CRITERION_HOME" "$WORK/native" <<'PY'
import json, os, sys
crit, native_file = sys.argv[1], sys.argv[2]
rust = {}  # (group, size, op, label) -> (best GB/s, median GB/s)
for d, _, files in os.walk(crit):
    if "benchmark.json" in files and os.path.basename(d) == "new":
        b = json.load(open(os.path.join(d, "benchmark.json")))
        e = json.load(open(os.path.join(d, "estimates.json")))
        s = json.load(open(os.path.join(d, "sample.json")))
        group, size = b["group_id"].split("/")
        size = int(size[:-3]) * 1024
        nbytes = b["throughput"]["Bytes"]
        best = min(t / i for t, i in zip(s["times"], s["iters"]))
        rust[(group, size, b["function_id"], b["value_str"])] = (
            nbytes / best, nbytes / e["median"]["point_estimate"])
native = {}
for line in open(native_file):
    name, op, size, v = line.split()
    key = (name, op, int(size))
    native[key] = max(native.get(key, 0.0), float(v))

def nat(name, op, size):
    if name.startswith("ring") or name.startswith("libsodium-secretbox-rs"):
        return rust.get(("baseline", size, op, name.replace("-rs", "")), (None,))[0]
    return native.get((name, op, size))

rows = [
    ("aesgcm-256", ["ring-aes-256-gcm", "ring-aes-256-gcm-vec", "openssl-aes-256-gcm-aead",
                    "openssl-aes-256-gcm"]),
    ("aesgcm-128", ["ring-aes-128-gcm"]),
    ("aesgcm-192", ["openssl-aes-192-gcm-aead"]),
    ("aescbc-256", ["openssl-aes-256-cbc"]),
    ("secretbox", ["libsodium-secretbox-c", "libsodium-secretbox-rs"]),
]
print("GB/s (10^9 bytes/s), least-disturbed figures; ratio = ours / native (target >= 0.80);")
print("'median' is criterion's median for our provider path")
for size in (1024, 65536):
    print(f"\n{size // 1024} KiB")
    print("| provider   | op      | ours GB/s | (median) | native                     | native GB/s | ratio |")
    print("|------------|---------|-----------|----------|----------------------------|-------------|-------|")
    for label, natives in rows:
        for op in ("encrypt", "decrypt"):
            ours, med = rust.get(("provider", size, op, label), (None, None))
            for n in natives:
                v = nat(n, op, size)
                r = f"{ours / v:.2f}" if ours and v else "-"
                o = f"{ours:.2f}" if ours else "-"
                m = f"{med:.2f}" if med else "-"
                vv = f"{v:.2f}" if v else "-"
                print(f"| {label:<10} | {op:<7} | {o:>9} | {m:>8} | {n:<26} | {vv:>11} | {r:>5} |")
PY
