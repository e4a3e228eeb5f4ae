#!/usr/bin/env bash
# Fuzzing smoke test: builds every cargo-fuzz target and runs each for FUZZ_SECONDS seconds
# (default 30), starting from the seeds in fuzz/seeds/<target>. Exits non-zero if any target
# finds a crash; the failing inputs are left in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them.
#
# Usage: fuzz/smoke.sh [target...]        (all targets when none are named)
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "smoke: no fuzz targets found" >&2
    exit 1
fi

echo "smoke: building ${targets[*]}" >&2
cargo fuzz build

failed=()
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    if [ -d "seeds/$target" ]; then
        cp -R "seeds/$target/." "$corpus/"
    fi
    echo "smoke: running $target for ${seconds}s" >&2
    if ! cargo fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "smoke: $target FAILED (see fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "smoke: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "smoke: all ${#targets[@]} targets ran ${seconds}s without a crash" >&2
