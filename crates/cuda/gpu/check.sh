#!/usr/bin/env bash
# The one GPU check of the CUDA backend, run on a machine with a GPU and CUDA
# but no Rust, from the repository root, with the bundle that
# `cargo xtask gpu-bundle` built (carried as target/gpu-bundle):
#
#   bash crates/cuda/gpu/check.sh target/gpu-bundle
#
# 1. the machine: GPU, driver, CUDA include and NVRTC found;
# 2. every test binary of kaiyuan-cuda with REQUIRE_GPU=1 (a skip is a
#    failure) and REQUIRE_NVRTC=1;
# 3. the benchmark table (gpu_bench), printed last.
# Logs go to $OUT (when set) or target/gpu-check/. Exits 1 if anything failed.
set -uo pipefail

BUNDLE="${1:-target/gpu-bundle}"
LOGS="${OUT:-target/gpu-check}"
mkdir -p "$LOGS"
started=$(date +%s)

# CUDA's own include and library directories (NVRTC and cuda_bf16.h).
for root in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13; do
  if [[ -n "$root" && -f "$root/include/cuda_bf16.h" ]]; then
    export CUDA_HOME="$root"
    export LD_LIBRARY_PATH="$root/lib64:$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
export REQUIRE_GPU=1 REQUIRE_NVRTC=1
export KAIYUAN_CUDA_CACHE="$LOGS/kernel-cache" KAIYUAN_PTXAS_REPORT="$LOGS/ptxas-report.md"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
echo "CUDA_HOME=${CUDA_HOME:-(not found)}"
ls "${CUDA_HOME:-/nonexistent}"/lib64/libnvrtc.so* 2>/dev/null | head -2
ldd "$BUNDLE/bin/gpu_bench" | grep -E "not found|libc.so" || true

failed=()
echo "== tests (REQUIRE_GPU=1)"
for test in "$BUNDLE"/bin/*; do
  name="$(basename "$test")"
  [[ "$name" == gpu_bench ]] && continue
  if "$test" --test-threads=1 >"$LOGS/$name.log" 2>&1; then
    echo "PASS $name: $(grep -E '^test result' "$LOGS/$name.log" | tail -1)"
  else
    failed+=("$name")
    echo "FAIL $name (log: $LOGS/$name.log); first failures:"
    grep -E -A1 "panicked|FAILED" "$LOGS/$name.log" | grep -v "^--" | head -24
  fi
done

echo "== benchmarks"
if ! "$BUNDLE/bin/gpu_bench" 2>&1 | tee "$LOGS/gpu_bench.log"; then
  failed+=(gpu_bench)
fi

echo "== $(($(date +%s) - started)) s; failed: ${failed[*]:-none}"
[[ ${#failed[@]} -eq 0 ]]
