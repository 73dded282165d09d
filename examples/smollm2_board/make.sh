#!/usr/bin/env bash
# Train SmolLM2-135M-Instruct with each built-in loss on the bundled sample, then build the board and its
# screenshot. Run from the repository root: examples/smollm2_board/make.sh [WORKDIR]  (about 25 min on 2 CPU cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:-out/smollm2_board}
mkdir -p "$work/adapters"
M=$(moral-ambiguity fetch-model smollm2)
SAMPLE=$(python -c "from moral_tasks.data import SAMPLE_DIR; print(SAMPLE_DIR)")
ln -sfn "$M" "$work/model"      # board.yaml names the model folder "model"
for loss in soft_cross_entropy dirichlet_multinomial; do
  [ -f "$work/adapters/$loss/adapter_model.safetensors" ] && continue
  moral-ambiguity train --model_name_or_path "$M" --task moral_dilemmas --loss "$loss" \
    --output_dir "$work/adapters/$loss" --data_dir "$SAMPLE" --apply_chat_template \
    --max_steps 20 --learning_rate 5e-4 --eval_steps 20 --per_device_train_batch_size 4 --seed 0
done
cd "$work"
moral-ambiguity leaderboard --config "$here/board.yaml" --output board --screenshot "$repo/docs/leaderboard.png"
