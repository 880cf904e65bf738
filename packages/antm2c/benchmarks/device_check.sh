#!/usr/bin/env bash
# Device check for antm2c (run from the repository root on a machine with an accelerator):
#   1. the package's test suite on that machine's own torch/pyarrow;
#   2. CUDA training: DeepFM and STAR on a small generated data set, AUC beside the CPU run;
#   3. the quick benchmark pinned to two cores (taskset), i.e. "2 cores" without other tenants.
# Results land in $OUT (or ./device_out).
set -uo pipefail
OUT="${OUT:-device_out}"
mkdir -p "$OUT"
export PYTHONPATH="shared/src:packages/antm2c/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PROGRESS=0
python3 -c "import torch, pyarrow, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pyarrow', pyarrow.__version__, 'pandas', pandas.__version__)"
nvidia-smi -L || true
python3 -m pytest packages/antm2c/tests -q -p no:cacheprovider 2>&1 | tail -5
python3 - <<'PY' 2>&1 | tee "$OUT/cuda_check.txt"
import tempfile, time, torch
from antm2c import FeatureSpec, SynthConfig, TrainConfig, generate, multi_scenario, prepare, run
d = tempfile.mkdtemp()
generate(f"{d}/raw", SynthConfig(n_rows=100_000, seed=0), progress_bar=False)
prepare(f"{d}/raw", f"{d}/prep", progress_bar=False)
task = multi_scenario(f"{d}/prep", None, FeatureSpec.preset("tabular"))
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
for model in ("deepfm", "star"):
    for dev in devices:
        t = time.perf_counter()
        r = run(task, model, TrainConfig(epochs=2, device=dev, seed=0))
        print(f"{model} {dev}: test AUC {r.metrics['overall']['auc']:.4f} "
              f"scene-4 AUC {r.metrics['scene']['4']['auc']:.4f} ({time.perf_counter() - t:.1f} s)")
PY
taskset -c 0,1 env OMP_NUM_THREADS=2 python3 -m antm2c bench --quick --output "$OUT/antm2c_2cores.json" 2>&1 | tail -9
