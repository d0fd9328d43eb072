#!/usr/bin/env bash
# Several train.py runs side by side on one GPU, each for MINUTES of wall-clock time, then the
# shortlisted snapshots packed (how the 2026-11-30 models were trained; docs/experiments.md).
#
#   python tools/train_subset.py                      # subsets/phase1/FracAtlas, ~44 MB of originals
#   bash tools/train_runs.sh MINUTES ["TAG MODEL [train.py options]" ...]
#
# Keras runs on JAX (PyTorch if JAX cannot see the GPU; TensorFlow is not needed), in
# mixed_bfloat16, with train.py's time-based cosine schedule (default runs: the three of the
# first phase). The logs and what tools/pack_run.py keeps (shortlisted weight snapshots,
# histories) go under $OUT (default runs/packed). Optional: a folder .whl/ of wheels is
# installed first, for a machine without package access.
set -u
MIN=${1:-6.5}
OUT=${OUT:-runs/packed}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${SKIP_WHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .whl/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/.whl/site
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export FRACATLAS_DIR=${FRACATLAS_DIR:-$PWD/subsets/phase1/FracAtlas}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -2
nproc
if [ -n "${KERAS_BACKEND:-}" ]; then
  :  # chosen by the caller
elif KERAS_BACKEND=jax python3 -c "import jax, keras; assert jax.devices()[0].platform == 'gpu', jax.devices(); print('jax', jax.__version__, jax.devices())"; then
  export KERAS_BACKEND=jax
else
  export KERAS_BACKEND=torch
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
fi
# A run stops itself at the first epoch end past MIN; the hard cap leaves time to pack whatever
# epochs were saved if an epoch runs long.
CAP=$(awk "BEGIN{print int($MIN*60+${GRACE_S:-90})}")
echo "backend $KERAS_BACKEND, $MIN minutes per run, killed at $CAP s"
common=(--batch-size 32 --steps-per-epoch 600 --epochs 500 --precision mixed_bfloat16 --workers "${WORKERS:-5}"
        --time-budget-minutes "$MIN" --data "$FRACATLAS_DIR" --verbose 2 ${EXTRA:-})
shift || true
if [ $# -eq 0 ]; then  # the first phase: the recipe from the seeds, and a U-Net with fewer fracture crops
  set -- "half unet --fractured-share 0.5 --lr 1e-3 --init-from Saved_model/unet.keras" \
         "third unet --fractured-share 0.3 --lr 1e-3 --init-from Saved_model/unet.keras" \
         "half encoder_decoder --fractured-share 0.5 --lr 1e-3 --init-from Saved_model/encoder_decoder.keras"
fi
dirs=()
for spec in "$@"; do  # each: "TAG MODEL [train.py options]"
  read -r -a a <<< "$spec"
  tag=${a[0]} model=${a[1]}
  dirs+=("runs/$tag/$model")
  timeout -k 10 "$CAP" python3 train.py --model "$model" --checkpoint-dir "runs/$tag" "${a[@]:2}" "${common[@]}" \
    > "$OUT/${tag}_$model.log" 2>&1 &
done
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>&1 | head -1
for f in "$OUT"/*.log; do echo "=== $f"; grep -v "skipping unreadable" "$f" | tail -30; done
python3 tools/pack_run.py "$OUT" "${dirs[@]}"
ls -la "$OUT"
