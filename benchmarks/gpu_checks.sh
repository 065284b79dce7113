#!/bin/bash
# The checks of docs/benchmarks.md that need a GPU, in one call of at most 6.5 minutes on a lent machine that cannot
# reach the network (torch with CUDA installed there; run from the repository root).  This task has under 10
# minutes of device time left (start-up included), so the steps come in order of what matters most and each has
# a limit of its own:
#
#   AELAB_CACHE=<folder holding mnist-v1.npz and mnist-v1.json> OUT=<results folder> bash benchmarks/gpu_checks.sh
#
# 1. tests/test_cudagraph.py (the graphed step against the eager one, a graphed run resumed);
# 2. time to quality with the step that fit replays from a CUDA graph (benchmarks/ttq.py, default and lecture);
# 3. throughput: the lecture loop, fit default and fit batch 100, passes of 60000 images (benchmarks/run.py);
# 4. the graphed step against the eager and the capturable-eager step (benchmarks/cuda_graph.py).
# Each writes into $OUT as it ends, under a time limit of its own, so that a call cut short keeps what finished.
set -u
: "${AELAB_CACHE:?set AELAB_CACHE to a folder holding mnist-v1.npz (the machine cannot download it)}"
: "${OUT:?set OUT to the folder for the results}"
export PYTHONPATH=src AELAB_CACHE PYTHONUNBUFFERED=1
mkdir -p "$OUT"
t0=$(date +%s)
step() {  # name, time limit in seconds, command...
    local name=$1 limit=$2; shift 2
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $? at $(( $(date +%s) - t0 )) s"
}
nvidia-smi -L
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
step tests 100 python3 -m pytest -q -p no:cacheprovider tests/test_cudagraph.py
tail -3 "$OUT/tests.log"
step ttq 150 python3 benchmarks/ttq.py --recipes default,lecture --max-epochs 15 --out "$OUT/ttq-gpu.json"
grep -E "^(lecture|default):" "$OUT/ttq.log" | tail -20
step throughput 80 python3 benchmarks/run.py --repeats 3 --only "fit batch 100, fp32, channels_last" \
    --out "$OUT/benchmarks-gpu.json"
step cuda-graph 60 python3 benchmarks/cuda_graph.py --batches 50,100 --repeats 5 --out "$OUT/cuda-graph-gpu.json"
