#!/usr/bin/env bash
# The README's leaderboard screenshot: SmolLM2-135M-Instruct (offline stand-in, dequantized from Q4_1 GGUF),
# its two adapters (one per built-in loss) and the reference rows, on the bundled 40-item SAMPLE data.
#
#   bash examples/smollm2_board/make.sh [OUT]      # OUT defaults to board-smollm2/
#
# Trains each adapter unless OUT/adapters/<loss> already holds one (about 2 minutes each on 2 CPU cores),
# runs the board (cached runs are reused) and writes docs/leaderboard.png (needs the [test] extra for
# Playwright and a Chromium, see docs/leaderboard.md).
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mkdir -p "${1:-board-smollm2}" && cd "${1:-board-smollm2}" && pwd)"
MODEL="$(moral-ambiguity fetch-model smollm2)"
SAMPLE="$(python -c 'from moral_tasks.data import SAMPLE_DIR; print(SAMPLE_DIR)')"

for loss in soft_cross_entropy dirichlet_multinomial; do
  if [ ! -f "$OUT/adapters/$loss/adapter_config.json" ]; then
    moral-ambiguity train --model_name_or_path "$MODEL" --task moral_dilemmas --loss "$loss" \
      --output_dir "$OUT/adapters/$loss" --data_dir "$SAMPLE" --apply_chat_template \
      --per_device_train_batch_size 8 --max_steps 30 --learning_rate 1e-3 --eval_steps 10 --seed 0
  fi
done

cat > "$OUT/board.yaml" <<YAML
title: SmolLM2-135M-Instruct and two adapters (bundled 40-item sample, not Scruples)
tasks: [moral_dilemmas, moral_dilemmas_debiased, moral_anecdotes]
metadata: {split: test, data_dir: '$SAMPLE'}
entries:
  - {name: smollm2, model: hf, model_args: 'pretrained=$MODEL', apply_chat_template: true, device: cpu}
  - {name: smollm2-sce, model: hf, model_args: 'pretrained=$MODEL,peft=$OUT/adapters/soft_cross_entropy', apply_chat_template: true, device: cpu}
  - {name: smollm2-dm, model: hf, model_args: 'pretrained=$MODEL,peft=$OUT/adapters/dirichlet_multinomial', apply_chat_template: true, device: cpu}
YAML

moral-ambiguity leaderboard --config "$OUT/board.yaml" --output "$OUT/board" --screenshot "$REPO/docs/leaderboard.png"
