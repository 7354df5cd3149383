#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes with AFL++ (cargo-afl, stable).
#   fuzz/run.sh [--seconds N | --execs N] [target ...]
# Default: 20 s per target (the CI run). `--execs 10000000` is RELIABILITY.md's figure.
# Prints one line per target (executions, paths, crashes, hangs) and exits 1 on any crash
# or hang, leaving the inputs under $FUZZ_OUT (default /tmp/atrest-fuzz).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
limit=(-V 20); targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) limit=(-V "$2"); shift 2 ;;
    --execs) limit=(-E "$2"); shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(envelope kms_object config storage_object json_object label_selector field_selector json_patch merge_patch strategic_patch apply_patch)
fi
command -v cargo-afl >/dev/null || cargo install cargo-afl --locked
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
(cd "$here" && cargo afl config --build >/dev/null 2>&1 || true)
(cd "$here" && cargo afl build --release --locked --bins -q)
out="${FUZZ_OUT:-/tmp/atrest-fuzz}"; mkdir -p "$out"
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
failed=0
printf '%-16s %12s %8s %8s %6s %6s\n' target execs execs/s corpus crashes hangs
for t in "${targets[@]}"; do
  rm -rf "${out:?}/$t"
  (cd "$here" && cargo afl fuzz "${limit[@]}" -i "corpus/$t" -o "$out/$t" -- "$CARGO_TARGET_DIR/release/$t" >"$out/$t.log" 2>&1) || {
    echo "$t: afl-fuzz failed; its output:"; tail -20 "$out/$t.log"; failed=1; continue; }
  stats="$out/$t/default/fuzzer_stats"
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
  printf '%-16s %12s %8s %8s %6s %6s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)"
  if [ "$(get saved_crashes)" != 0 ] || [ "$(get saved_hangs)" != 0 ]; then
    echo "$t: findings in $out/$t/default/{crashes,hangs}"; failed=1
  fi
done
exit $failed
