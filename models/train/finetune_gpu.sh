#!/usr/bin/env bash
# Fine-tune the shipped SFace model on LFW people outside the evaluated folds, once per loss, and
# evaluate the shipped model ("before") and every fine-tuned one ("after") on those folds only.
#
#   models/train/finetune_gpu.sh [RUN_DIR]          # default RUN_DIR: runs/finetune_gpu
#
# Only 52 LFW people with 2+ images appear in none of the 10 folds, so the folds are split in two
# halves: train on everyone outside folds 1-5 and evaluate on 1-5, then the other way round; every
# pair of LFW View 2 is then scored by a model that never saw its people (folds are person-disjoint).
#
# Idempotent: finished evaluations are skipped and training resumes from its last checkpoint, so the
# script can be re-run (or split with HALVES=/LOSSES=) on machines that give out short time slices.
# Environment knobs (defaults in brackets): PY [python], LFW [../shared/data/lfw], STEPS [2000],
# LR [2e-5], MARGIN [0.2, the FaceNet α for triplet losses], P [32], K [4], HALVES ["1-5 6-10"],
# LOSSES ["triplet:semihard triplet:batch_hard triplet:batch_all softmax_ratio lifted"],
# CACHE [.cache/aligned], STOP_AT [unset: train to the end in one go], and TRAIN_FLAGS / EVAL_FLAGS
# [empty]: extra flags for every train / evaluate call (a CPU smoke run of this very script:
#   STEPS=2 P=4 K=2 HALVES=1-2 LOSSES="triplet:semihard lifted" \
#   TRAIN_FLAGS="--max-identities 8 --max-images-per-identity 4" EVAL_FLAGS="--pairs-per-fold 10" \
#   models/train/finetune_gpu.sh /tmp/smoke ).
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PY:-python}
RUN=${1:-runs/finetune_gpu}
LFW=${LFW:-../shared/data/lfw}
STEPS=${STEPS:-2000}
LR=${LR:-2e-5}
MARGIN=${MARGIN:-0.2}
P=${P:-32}
K=${K:-4}
HALVES=${HALVES:-"1-5 6-10"}
LOSSES=${LOSSES:-"triplet:semihard triplet:batch_hard triplet:batch_all softmax_ratio lifted"}
CACHE=${CACHE:-.cache/aligned}
STOP=()
if [[ -n "${STOP_AT:-}" ]]; then STOP=(--stop-at "$STOP_AT"); fi
read -r -a TRAIN_EXTRA <<< "${TRAIN_FLAGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_FLAGS:-}"

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

evaluate() {  # evaluate MODEL_DIR CARD FOLDS OUT [extra flags]
  local model_dir=$1 card=$2 folds=$3 out=$4
  shift 4
  if [[ -f "$out/report.json" ]]; then echo "done already: $out/report.json"; return; fi
  "$PY" -m models.train evaluate --model-dir "$model_dir" --card "$card" --folds "$folds" \
    --lfw-dir "$LFW" --cache-dir "$CACHE" --out "$out" "${EVAL_EXTRA[@]}" "$@"
}

for folds in $HALVES; do
  half="$RUN/holdout_${folds}"
  # Before: the shipped model, untouched (no --update-card: its card belongs to models/artifacts).
  evaluate models/artifacts embedder.json "$folds" "$half/baseline"
  for spec in $LOSSES; do
    loss=${spec%%:*}
    miner=${spec#*:}
    [[ "$miner" == "$spec" ]] && miner=semihard
    margin=$MARGIN
    [[ "$loss" == lifted ]] && margin=1.0  # Song et al. use α = 1 on plain distances
    name="sface_ft_${loss}"
    [[ "$loss" == triplet ]] && name="${name}_${miner}"
    dir="$half/$name"
    "$PY" -m models.train train --backbone sface --data-root "$LFW" --lfw-pairs "$LFW/pairs.txt" \
      --holdout-folds "$folds" --cache-dir "$CACHE" --out-dir "$dir" --loss "$loss" --miner "$miner" \
      --margin "$margin" --identities-per-batch "$P" --images-per-identity "$K" --steps "$STEPS" --lr "$LR" \
      --checkpoint-every 250 --resume true "${STOP[@]}" "${TRAIN_EXTRA[@]}"
    step=$("$PY" -c "import torch,sys; print(torch.load(sys.argv[1], map_location='cpu', weights_only=True)['step'])" \
      "$dir/checkpoints/last.pt")
    if [[ "$step" -lt "$STEPS" ]]; then echo "stopped at step $step of $STEPS; run again to resume"; exit 0; fi
    if [[ ! -f "$dir/export/$name.json" ]]; then
      "$PY" -m models.train export "$dir/checkpoints/last.pt" --out "$dir/export" --name "$name"
    fi
    # After: calibrated threshold and metrics go into the fine-tuned model's own card.
    evaluate "$dir/export" "$name.json" "$folds" "$dir/eval" --update-card
  done
done

shopt -s nullglob
reports=("$RUN"/holdout_*/baseline/report.json "$RUN"/holdout_*/*/eval/report.json)
"$PY" -m models.train summarize "${reports[@]}" | tee "$RUN/summary.md"
