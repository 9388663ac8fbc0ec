#!/usr/bin/env bash
# The one GPU check of the CUDA backend, run on a machine with a GPU and CUDA
# but no Rust, from the repository root, with the bundle that
# `cargo xtask gpu-bundle` built (carried as target/gpu-bundle):
#
#   bash crates/cuda/gpu/check.sh target/gpu-bundle
#
# 1. the machine: GPU, driver, CUDA include and NVRTC found;
# 2. every test binary of the bundle (kaiyuan-cuda's parity tests, the
#    tensor ops on Device::Cuda, training on the device) with REQUIRE_GPU=1
#    (a skip is a failure) and REQUIRE_NVRTC=1;
# 3. training tokens/s of the `kaiyuan bench train` model on the GPU: ours
#    (`kaiyuan --device cuda bench train`, through cuBLAS and, with
#    KAIYUAN_GEMM=ours, through our GEMM) and the PyTorch eager peer (when
#    python3 has torch with CUDA), same model, batch and sequence;
# 4. the benchmark table (gpu_bench), printed last.
# Logs go to $OUT (when set) or target/gpu-check/. Exits 1 if anything failed.
# SKIP_TESTS="compile_kernels …" leaves out test binaries by name (a rerun
# that needs no second compile check); TEST_TIMEOUT bounds each (240 s);
# SKIP_PEER=1 leaves out the PyTorch peer.
set -uo pipefail

PACKED="${1:-target/gpu-bundle}"
LOGS="${OUT:-target/gpu-check}"
mkdir -p "$LOGS"
started=$(date +%s)

# The bundle's executables travel gzipped; unpack them in scratch space
# (not under $OUT, whose files are sent back).
SCRATCH="${TMPDIR:-/tmp}/kaiyuan-gpu-check"
BUNDLE="$SCRATCH/bundle"
rm -rf "$BUNDLE"
for dir in bin tools; do
  mkdir -p "$BUNDLE/$dir"
  for f in "$PACKED/$dir"/*; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .gz)"
    if [[ "$f" == *.gz ]]; then gzip -dc "$f" >"$BUNDLE/$dir/$name"; else cp "$f" "$BUNDLE/$dir/$name"; fi
    chmod +x "$BUNDLE/$dir/$name"
  done
done

# CUDA's own include and library directories (NVRTC and cuda_bf16.h).
for root in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13; do
  if [[ -n "$root" && -f "$root/include/cuda_bf16.h" ]]; then
    export CUDA_HOME="$root"
    export LD_LIBRARY_PATH="$root/lib64:$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
export REQUIRE_GPU=1 REQUIRE_NVRTC=1
# Test runs write their scratch here (the build machine's target/ is not).
export KAIYUAN_TEST_TMPDIR="$SCRATCH/tmp"
mkdir -p "$KAIYUAN_TEST_TMPDIR"
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
  if [[ " ${SKIP_TESTS:-} " == *" $name "* ]]; then
    echo "SKIP $name (named in SKIP_TESTS)"
    continue
  fi
  if timeout "${TEST_TIMEOUT:-240}" "$test" --test-threads=1 >"$LOGS/$name.log" 2>&1; then
    echo "PASS $name: $(grep -E '^test result' "$LOGS/$name.log" | tail -1)"
  else
    failed+=("$name")
    echo "FAIL $name (log: $LOGS/$name.log); first failures:"
    grep -E -A1 "panicked|FAILED" "$LOGS/$name.log" | grep -v "^--" | head -24
  fi
done

echo "== ours: kaiyuan --device cuda bench train (tokens/s, median of 20 steps)"
if [[ -x "$BUNDLE/tools/kaiyuan" ]]; then
  for shape in "8,128" "64,256"; do
    for dtype in f32 bf16; do
      for gemm in cublas ours; do
        if ! KAIYUAN_GEMM="$gemm" timeout 180 "$BUNDLE/tools/kaiyuan" --device cuda bench train \
          --repeats 20 --sizes "$shape" --dtype "$dtype" --json 2>>"$LOGS/bench_train.log" \
          | sed "s/^{/{\"gemm\":\"$gemm\",/" | tee -a "$LOGS/bench_train.jsonl"; then
          failed+=("bench-train-$dtype-$gemm-$shape")
          echo "FAIL bench train $dtype $gemm $shape (log: $LOGS/bench_train.log)"
        fi
      done
    done
  done
else
  echo "skipped: the bundle has no tools/kaiyuan"
fi

echo "== PyTorch eager peer (fixtures/bench/train_torch.py on the GPU)"
if [[ -n "${SKIP_PEER:-}" ]]; then
  echo "skipped: SKIP_PEER is set"
elif python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  for shape in "8 128" "64 256"; do
    set -- $shape
    for precision in fp32 bf16; do
      timeout 120 python3 fixtures/bench/train_torch.py --device cuda --precision "$precision" \
        --steps 20 --batch "$1" --seq "$2" 2>>"$LOGS/train_torch.log" | tee -a "$LOGS/train_torch.jsonl" \
        || echo "train_torch.py $precision $1x$2 failed (log: $LOGS/train_torch.log)"
    done
  done
else
  echo "skipped: python3 has no torch with CUDA"
fi

echo "== benchmarks"
if ! "$BUNDLE/bin/gpu_bench" 2>&1 | tee "$LOGS/gpu_bench.log"; then
  failed+=(gpu_bench)
fi

echo "== $(($(date +%s) - started)) s; failed: ${failed[*]:-none}"
[[ ${#failed[@]} -eq 0 ]]
