#!/usr/bin/env bash
# Issue 9's training runs on the lent GPU machine (the `device` tool), all in one call.
#
#   here:   python tools/device_subset.py            # .devdata/FracAtlas, ~44 MB of originals
#           pip download keras==3.15.1 namex optree pycocotools (cp312 wheels) -d .whl
#   there:  bash tools/device_train.sh MINUTES ["TAG MODEL [train.py options]" ...]   # carry [".devdata", ".whl"]
#
# The machine has JAX, PyTorch and CUDA but no TensorFlow: Keras runs on JAX (PyTorch if JAX
# cannot see the GPU), in mixed_bfloat16, the given runs side by side on the one GPU (default: the
# three of the first run), each for MINUTES of wall-clock time with train.py's time-based cosine schedule. Everything that comes
# back is written under $OUT by tools/pack_run.py (shortlisted weight snapshots, histories) and
# the runs' logs. Nothing here is needed on a machine without that tool.
set -u
MIN=${1:-6.5}
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${SKIP_WHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export FRACATLAS_DIR=${FRACATLAS_DIR:-$PWD/.devdata/FracAtlas}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -2
nproc
if [ -n "${KERAS_BACKEND:-}" ]; then
  :  # chosen by the caller (a local rehearsal of this script)
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
if [ $# -eq 0 ]; then  # the first run of issue 9: the recipe from the seeds, and a U-Net with fewer fracture crops
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
