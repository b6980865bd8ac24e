#!/usr/bin/env bash
# Everything here that needs a CUDA GPU, in one go (a lent GPU's time is short), each part under its own time limit:
#   1. host syncs per training step as CUDA itself counts them (benchmarks/syncs.py --device cuda)
#   2. the GPU tests (tests/cli/test_gpu.py: bf16/fp16 training, torch.compile, CUDA's sync count per config)
#   3. training throughput, FLOPs and MFU of $THROUGHPUT_CONFIGS (benchmarks/throughput.py; default the UNet of
#      celeb_cond and the DiTs of celeb_cond_dit and cifar10_dit), at each config's batch size and at 256 ($BATCHES)
#   4. the framework's overhead over the plain loop (benchmarks/overhead.py --devices cuda; $CASES)
# Logs and tables go to $OUT (default outputs/gpu_checks). Wheels in .whl/ (packages the GPU machine lacks, e.g.
# `pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl diffusers jsonargparse docstring_parser
# typeshed_client torch-fidelity datasets dill multiprocess`) are installed first into /tmp/site.
#
#   bash benchmarks/gpu_checks.sh
#   BATCHES=256 CASES="MLP UNet" THROUGHPUT_S=150 bash benchmarks/gpu_checks.sh   # a shorter run
#   THROUGHPUT_CONFIGS=celeb_cond_dit BATCHES=config bash benchmarks/gpu_checks.sh   # one config
set -u
OUT=$(realpath -m "${OUT:-outputs/gpu_checks}")
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

part() {  # part NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

{
  nvidia-smi -L
  python3 -c "import sys, torch, lightning, diffusers, jsonargparse, datasets, pyarrow, fsspec
print(sys.version.split()[0], 'torch', torch.__version__, 'lightning', lightning.__version__, 'diffusers',
      diffusers.__version__, 'jsonargparse', jsonargparse.__version__, 'datasets', datasets.__version__,
      'pyarrow', pyarrow.__version__, 'fsspec', fsspec.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/summary.txt"

throughput() {  # each batch size of $BATCHES ("config": the config's own)
  for batch in ${BATCHES:-config 256}; do
    python3 throughput.py --configs ${THROUGHPUT_CONFIGS:-celeb_cond celeb_cond_dit cifar10_dit} --steps 20 --warmup 5 \
      --notes "$OUT/throughput.md" \
      $([ "$batch" = config ] || echo --batch_size "$batch") || return
  done
}
export -f throughput
export OUT
(cd benchmarks && part syncs 90 python3 syncs.py --device cuda --steps 30 --notes "$OUT/syncs.md")
part tests 200 python3 -m pytest -q -p no:cacheprovider tests/cli/test_gpu.py -rA
(cd benchmarks && part throughput "${THROUGHPUT_S:-300}" bash -c throughput)
(cd benchmarks && part overhead 240 python3 overhead.py --devices cuda --repeats 3 ${CASES:+--cases $CASES} \
  --notes "$OUT/overhead.md")
cat "$OUT"/*.md 2>/dev/null
tail -n 3 "$OUT/tests.log"
cat "$OUT/summary.txt"
