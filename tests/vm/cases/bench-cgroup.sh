# Benchmark, not a test: cpu/memory stress through the agent vs stress-ng (bench/cgroup.py).
# Skips unless CHAOS_VM_BENCH=1, which `scripts/bench --cgroup` sets, so the test layer never runs it.
# CHAOS_VM_BENCH_ARGS (word-split) go to bench/cgroup.py, e.g. "--quick" or "--cpus 2".
# vm-timeout: 420
[ "${CHAOS_VM_BENCH:-}" = 1 ] || skip "benchmark; run it with scripts/bench --cgroup"
require_agent
command -v stress-ng >/dev/null || skip "stress-ng is not installed in the VM"
# shellcheck disable=SC2086  # the extra arguments are meant to be split
python3 "$VM_REPO/bench/cgroup.py" --bin-dir "$CHAOS_BIN" --out-dir "$VM_RESULTS" ${CHAOS_VM_BENCH_ARGS:-}
