#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one after another,
# starting from its seed corpus. Exits non-zero if any target crashes.
#
#   fuzz/run.sh [SECONDS [RUNS]]
#
# RUNS, if given, also ends each target after that many executions (whichever
# comes first): `fuzz/run.sh 10 50000` is the smoke scripts/test.sh runs.
# TARGETS="a b" runs only those targets.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# nightly-only flags it needs. SANITIZER=address turns AddressSanitizer on
# (default none: vnet-proto has no unsafe code, and ASan halves throughput).
set -euo pipefail

secs="${1:-60}"
runs="${2:-}"
case "$secs$runs" in
'' | *[!0-9]*)
	echo "usage: $0 [seconds-per-target [runs-per-target]]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
sanitizer="${SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "=== cargo-fuzz missing: installing it (cargo install cargo-fuzz --locked)" >&2
	cargo install cargo-fuzz --locked
fi

cargo fuzz build --sanitizer "$sanitizer"

limits=(-max_total_time="$secs")
if [ -n "$runs" ]; then
	limits+=(-runs="$runs")
fi

failed=()
for target in ${TARGETS:-$(cargo fuzz list)}; do
	# A scratch corpus (gitignored) that starts as a copy of the seeds and
	# keeps what libFuzzer finds between runs.
	corpus="corpus/$target"
	mkdir -p "$corpus"
	if [ -d "seeds/$target" ]; then
		cp seeds/"$target"/* "$corpus"/
		chmod u+w "$corpus"/*
	fi
	echo "=== $target: ${secs}s${runs:+ or $runs runs} from $corpus" >&2
	if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
		"${limits[@]}" -print_final_stats=1; then
		echo "=== $target: CRASHED (reproducer in fuzz/artifacts/$target/)" >&2
		failed+=("$target")
	fi
done

if [ "${#failed[@]}" -ne 0 ]; then
	echo "=== crashed: ${failed[*]}" >&2
	exit 1
fi
echo "=== all targets ran ${secs}s${runs:+ or $runs runs} each without a crash" >&2
