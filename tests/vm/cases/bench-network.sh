# Benchmark, not a test: network fault apply/revert through the agent's socket vs exec'ing tc (bench/network.py).
# Skips unless CHAOS_VM_BENCH=1, which `scripts/bench --network` sets, so the test layer never runs it.
# CHAOS_VM_BENCH_ARGS (word-split) go to bench/network.py, e.g. "--quick" or "--iterations 100".
# vm-timeout: 420
[ "${CHAOS_VM_BENCH:-}" = 1 ] || skip "benchmark; run it with scripts/bench --network"
require_agent
# shellcheck disable=SC2086  # the extra arguments are meant to be split
python3 "$VM_REPO/bench/network.py" --bin-dir "$CHAOS_BIN" --out-dir "$VM_RESULTS" ${CHAOS_VM_BENCH_ARGS:-}
