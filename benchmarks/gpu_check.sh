#!/usr/bin/env bash
# Every CUDA code path of ppl_gen, in one prepared run of at most ~8 minutes on a GPU machine.
#
#   benchmarks/gpu_check.sh            (from anywhere; it runs in the repository root)
#
# 1. environment: GPUs, torch / CUDA versions, bf16 support;
# 2. the CUDA-only tests (every test in tests/ guarded by skipif(not cuda...), found by
#    parsing the test files), which must all run: a CUDA skip is a failure;
# 3. bf16 on CUDA through the CLI: `ppl-gen train vae` and `train dcgan` with
#    --precision bf16 (finite losses required), printing their images/s;
# 4. with 2 or more GPUs: SyncBatchNorm over NCCL under torchrun (outputs, running
#    statistics and gradients against one process on the whole batch), and 2-process
#    `ppl-gen train vae` / `train dcgan` on CUDA; with one GPU this part is skipped with a
#    message;
# 5. GPU throughput, small settings, figures printed: vae_throughput.py (ppl_gen vs the
#    plain-PyTorch loop, same run), iwae_eval.py (IWAE-K vs the plain-PyTorch reference,
#    same run), distributed_scaling.py --gpu-only (VAE GPU vs CPU images/s, IWAE on the GPU)
#    and gan_throughput.py when it takes --device (else the DCGAN figure of step 3).
#
# Nothing is installed or downloaded: it uses .venv/bin/python (or $PY) as it is, MNIST
# from ../shared/data/mnist or ./shared/data/mnist when present (else synthetic data or a
# generated image folder), and writes results under $OUT (default
# benchmarks/results/gpu_check).  Without a GPU it stops at once with a clear message
# (exit 2); a failed step makes the exit status 1, after the summary.
#
# Time: every step has its own limit and the whole run a budget of $BUDGET_S seconds
# (default 450); steps that no longer fit are reported as not run.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
OUT_DIR=${OUT:-$ROOT/benchmarks/results/gpu_check}
BUDGET_S=${BUDGET_S:-450}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ppl_gen_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PY OUT_DIR WORK PYTHONWARNINGS=ignore
START=$SECONDS
SUMMARY=()
FAILED=0

say() { printf '\n=== %s\n' "$*"; }
record() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }

# step NAME LIMIT_S COMMAND...: run COMMAND (a program or an exported function) under
# `timeout`, within the remaining budget.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    record "$name" "NOT RUN (time budget of ${BUDGET_S} s spent)"
    FAILED=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name (limit ${limit} s)"
  local t0=$SECONDS rc
  if declare -F "$1" >/dev/null; then
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@"
  else
    timeout --kill-after=10 "$limit" "$@"
  fi
  rc=$?
  local took=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then
    record "$name" "ok (${took} s)"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "$name" "FAILED: timed out after ${limit} s"
    FAILED=1
  else
    record "$name" "FAILED (exit $rc, ${took} s)"
    FAILED=1
  fi
  return "$rc"
}

skip() {
  say "$1"
  echo "SKIPPED: $2"
  record "$1" "skipped: $2"
}

# ------------------------------------------------------------------ 1. a GPU, or stop
say "environment"
if ! "$PY" - <<'EOF'; then
import sys

import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit(1)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
print(f"bf16 supported: {torch.cuda.is_bf16_supported()}")
print(f"NCCL available: {torch.distributed.is_nccl_available()}")
EOF
  echo >&2
  echo "GPU CHECK CANNOT RUN: no CUDA GPU is visible to PyTorch on this machine" >&2
  echo "(torch.cuda.is_available() is False for $PY; its torch build is shown above)." >&2
  echo "This script exercises the CUDA code paths and needs a machine with a GPU;" >&2
  echo "the CPU test suite is: .venv/bin/pytest -q tests" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")

MNIST=""
for d in "$ROOT/../shared/data/mnist" "$ROOT/shared/data/mnist"; do
  if [ -d "$d/MNIST/raw" ]; then MNIST=$(cd "$d" && pwd); break; fi
done
if [ -n "$MNIST" ]; then
  echo "MNIST: $MNIST"
  IMAGES=(--data mnist --data-root "$MNIST")
else
  echo "MNIST not found (../shared/data/mnist): using synthetic data / generated images"
  "$PY" - "$WORK/images" <<'EOF'
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

out = Path(sys.argv[1])
out.mkdir(parents=True)
g = torch.Generator().manual_seed(0)
for i in range(512):
    save_image(torch.rand(1, 28, 28, generator=g), out / f"{i:04d}.png")
EOF
  IMAGES=(--data "$WORK/images")
fi

# ------------------------------------------------------------------ 2. CUDA-only tests
"$PY" - "$WORK/cuda_tests.txt" <<'EOF'
"""Node ids of the tests guarded by skipif(not <cuda available>), whole test or a param."""
import ast
import re
import sys
from pathlib import Path

ids = []
for path in sorted(Path("tests").glob("test_*.py")):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + "::")
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                text = " ".join(ast.get_source_segment(source, d) or "" for d in node.decorator_list)
                if re.search(r"skipif\(\s*not\s+[^,]*cuda", text, re.IGNORECASE):
                    ids.append(f"{path}::{prefix}{node.name}")

    visit(tree.body, "")
Path(sys.argv[1]).write_text("\n".join(ids) + "\n")
print(f"{len(ids)} CUDA-only tests:", *ids, sep="\n  ")
EOF
mapfile -t CUDA_TESTS < <(grep -v '^$' "$WORK/cuda_tests.txt")
cuda_tests() {  # cuda_tests NODE_ID...
  local log=$WORK/cuda_tests.log
  "$PY" -m pytest -q -rs -p no:cacheprovider "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if grep -iE "^SKIPPED.*cuda" "$log"; then
    echo "a CUDA test was skipped on a CUDA machine (above)" >&2
    return 1
  fi
  return "$rc"
}
export -f cuda_tests
if [ "${#CUDA_TESTS[@]}" -gt 0 ]; then
  step "CUDA-only tests (${#CUDA_TESTS[@]})" 200 cuda_tests "${CUDA_TESTS[@]}"
else
  record "CUDA-only tests" "FAILED: none found in tests/"
  FAILED=1
fi

# ------------------------------------------------------------------ 3. bf16 via the CLI
# cli_run NAME ARGS...: ppl-gen ARGS --json > $OUT_DIR/NAME.json, then print its figures.
cli_run() {
  local name=$1
  shift
  "$PY" -m ppl_gen "$@" --json >"$OUT_DIR/$name.json" || return 1
  "$PY" - "$OUT_DIR/$name.json" <<'EOF'
import json
import math
import sys

m = json.load(open(sys.argv[1]))
finals = {k: v for k, v in m.items() if k.startswith("final") and isinstance(v, (int, float))}
for k, v in (m.get("final") or {}).items():
    finals[f"final {k}"] = v
bad = {k: v for k, v in finals.items() if not math.isfinite(v)}
ips = m.get("images_per_second")
print(
    f"{sys.argv[1].rsplit('/', 1)[-1]}: precision {m.get('precision')}, processes "
    f"{m.get('processes', 1)}, {', '.join(f'{k} {v:.4g}' for k, v in finals.items())}"
    + (f", {ips:,.0f} images/s" if ips else "")
)
if bad or not finals:
    sys.exit(f"non-finite or missing final losses: {bad or finals}")
EOF
}
export -f cli_run
step "bf16: train vae --device cuda" 90 cli_run vae_bf16 train vae --data digits \
  --epochs 3 --device cuda --precision bf16 --out "$WORK/vae_bf16"
step "bf16: train dcgan --device cuda" 120 cli_run dcgan_bf16 train dcgan "${IMAGES[@]}" \
  --n-train 2048 --epochs 1 --device cuda --precision bf16 --out "$WORK/dcgan_bf16"

# ------------------------------------------------------------------ 4. 2 GPUs: NCCL
torchrun2() {
  "$PY" -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 \
    --master-port "$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" "$@"
}
export -f torchrun2
if [ "$NGPU" -ge 2 ]; then
  cat >"$WORK/sync_bn.py" <<'EOF'
"""SyncBatchNorm over NCCL against one process on the whole batch."""
import copy

import torch
from torch import nn

from ppl_gen.core.distributed import init_from_env, sync_batchnorm, teardown

torch.backends.cudnn.allow_tf32 = False  # compare in true float32
torch.backends.cuda.matmul.allow_tf32 = False
ctx = init_from_env("cuda")
assert ctx.backend == "nccl" and ctx.world_size == 2, (ctx.backend, ctx.world_size)
torch.manual_seed(0)
full = torch.randn(8, 3, 6, 6, device=ctx.device)
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).to(ctx.device)
ref = copy.deepcopy(net)
net = sync_batchnorm(net, ctx)
assert any(isinstance(m, nn.SyncBatchNorm) for m in net.modules()), "no SyncBatchNorm"
ddp = ctx.wrap(net)
out = ddp(ctx.shard(full))
out.square().sum().backward()
ref_out = ref(full)
ref_out.square().sum().backward()
d_out = (out - ctx.shard(ref_out)).abs().max().item()
d_mean = (net[1].running_mean - ref[1].running_mean).abs().max().item()
d_var = (net[1].running_var - ref[1].running_var).abs().max().item()
# DDP averages the ranks' gradients; the one-process loss is their sum
scale = ref[0].weight.grad.abs().max().item()
d_grad = (net[0].weight.grad * ctx.world_size - ref[0].weight.grad).abs().max().item() / scale
if ctx.is_main:
    print(f"SyncBatchNorm/NCCL vs one process: max |diff| output {d_out:.2e}, running mean "
          f"{d_mean:.2e}, running var {d_var:.2e}, conv grad {d_grad:.2e} (relative)")
assert max(d_out, d_mean, d_var) < 1e-4 and d_grad < 1e-4, "mismatch"
teardown()
EOF
  step "2 GPUs: SyncBatchNorm over NCCL" 90 torchrun2 "$WORK/sync_bn.py"
  torch2_cli() {
    local name=$1
    shift
    torchrun2 -m ppl_gen "$@" --json >"$OUT_DIR/$name.json" || return 1
    "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[1], 'processes', m.get('processes'), 'images/s', m.get('images_per_second')); assert m.get('processes') == 2" "$OUT_DIR/$name.json"
  }
  export -f torch2_cli
  step "2 GPUs: train vae --device cuda" 120 torch2_cli vae_2gpu train vae --data digits \
    --epochs 2 --device cuda --out "$WORK/vae_2gpu"
  step "2 GPUs: train dcgan --device cuda (SyncBatchNorm)" 150 torch2_cli dcgan_2gpu \
    train dcgan "${IMAGES[@]}" --n-train 2048 --epochs 1 --device cuda --out "$WORK/dcgan_2gpu"
else
  skip "2 GPUs: SyncBatchNorm / NCCL" "needs 2 GPUs, this machine has $NGPU"
fi

# ------------------------------------------------------------------ 5. throughput
cd "$ROOT/benchmarks" || exit 2
if [ -n "$MNIST" ]; then VAE_DATA=(--data-root "$MNIST" --n-train 12800); else VAE_DATA=(--synthetic --n-train 12800); fi
step "vae_throughput.py --device cuda" 120 "$PY" vae_throughput.py --device cuda \
  "${VAE_DATA[@]}" --rounds 2 --variants plain,ppl_gen,ppl_gen-trace \
  --out "$OUT_DIR/vae_throughput_cuda.json"
if [ -n "$MNIST" ]; then
  step "iwae_eval.py --device cuda" 120 "$PY" iwae_eval.py --device cuda --data-root "$MNIST" \
    --n-test 2000 --k 1000 --no-probe --chunk 1000000 --segments 2 --reference-images 200 \
    --out "$OUT_DIR/iwae_eval_cuda.json"
  DS_DATA=(--data-root "$MNIST")
else
  skip "iwae_eval.py --device cuda" "needs MNIST (../shared/data/mnist)"
  DS_DATA=(--synthetic)
fi
step "distributed_scaling.py --gpu-only" 120 "$PY" distributed_scaling.py --gpu-only \
  "${DS_DATA[@]}" --epochs 2 --iwae-k 1000 --n-test 2000 \
  --out "$OUT_DIR/distributed_scaling_gpu.json"
if "$PY" gan_throughput.py --help 2>/dev/null | grep -q -- "--device"; then
  step "gan_throughput.py --device cuda" 150 "$PY" gan_throughput.py --quick --device cuda
else
  skip "gan_throughput.py on CUDA" "gan_throughput.py has no --device option (CPU only); the DCGAN CUDA figure is step 3's"
fi
cd "$ROOT" || exit 2

# ------------------------------------------------------------------ summary
say "summary ($((SECONDS - START)) s; results in $OUT_DIR)"
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
  echo "GPU CHECK FAILED" >&2
  exit 1
fi
echo "GPU CHECK PASSED"
