#!/usr/bin/env bash
# Reproduce the study of arXiv 2410.07826 with moral-ambiguity (see README.md in this folder).
# Needs: the Hugging Face hub (Llama-3.1 is gated: accept its licence and `hf auth login`), GPUs
# (one 40-80 GB GPU is enough for everything; GPUS=N trains with N-way DDP), OPENAI_API_KEY for
# GPT-4o, and `pip install moral-ambiguity` ('moral-ambiguity[qlora]' for QLORA=1).
#
#   bash examples/reproduce_2410.07826/run.sh            # all steps, resumable: rerun after a failure
#   STEP=train bash examples/reproduce_2410.07826/run.sh # one step: data | train | encoders | board
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

GPUS="${GPUS:-1}"
STEP="${STEP:-all}"
TASKS=(moral_dilemmas moral_anecdotes_binary)   # add moral_anecdotes for the 5-way anecdotes
declare -A MODELS=(
  [llama]=meta-llama/Llama-3.1-8B-Instruct
  [zephyr]=HuggingFaceH4/zephyr-7b-beta
  [mistral]=mistralai/Mistral-7B-Instruct-v0.3
)
declare -A LOSSES=([sce]=soft_cross_entropy [dm]=dirichlet_multinomial)
declare -A ENCODERS=([roberta]=roberta-large [bert]=bert-large-uncased)

if (( GPUS > 1 )); then
  TRAIN=(accelerate launch --multi_gpu --num_processes "$GPUS" -m trainers)   # DDP: examples/accelerate/ddp.yaml
else
  TRAIN=(moral-ambiguity train)
fi
# QLORA=1: 4-bit NF4 base (QLoRA) instead of a bf16 base; the adapters are evaluated on the bf16 base.
QUANT=()
[[ "${QLORA:-0}" == 1 ]] && QUANT=(--load_in_4bit --bnb_4bit_quant_type nf4)

step() { [[ "$STEP" == all || "$STEP" == "$1" ]]; }

if step data; then
  moral-ambiguity data fetch            # the official Scruples v1.0 tarballs, into the user cache
  moral-ambiguity data verify
fi

if step train; then
  for task in "${TASKS[@]}"; do
    for model in "${!MODELS[@]}"; do
      for loss in "${!LOSSES[@]}"; do
        out="adapters/$task/$model-$loss"
        [[ -f "$out/moral_ambiguity_card.json" ]] && continue   # done (an interrupted run resumes from its checkpoint)
        "${TRAIN[@]}" --model_name_or_path "${MODELS[$model]}" --task "$task" --loss "${LOSSES[$loss]}" \
          --output_dir "$out" --apply_chat_template "${QUANT[@]}" \
          --per_device_train_batch_size $(( 16 / GPUS > 0 ? 16 / GPUS : 1 )) --learning_rate 1e-4 \
          --num_train_epochs 1 --eval_steps 200 --early_stopping_patience 3 --seed 0
      done
    done
  done
fi

if step encoders; then
  for enc in "${!ENCODERS[@]}"; do
    for loss in "${!LOSSES[@]}"; do
      out="enc/$enc-$loss"
      [[ -f "$out/${TASKS[0]}/moral_ambiguity_card.json" ]] && continue
      # --task moral_ambiguity: one classifier per task, in $out/<task>/
      moral-ambiguity train-encoder --model_name_or_path "${ENCODERS[$enc]}" --task moral_ambiguity \
        --loss "${LOSSES[$loss]}" --output_dir "$out" --per_device_train_batch_size 16 --num_train_epochs 3 --seed 0
    done
  done
fi

if step board; then
  for task in "${TASKS[@]}"; do
    board="board_${task#moral_}.yaml"
    [[ -f "$board" ]] || { echo "no $board: copy board_anecdotes_binary.yaml and rename the task and adapter paths" >&2; exit 1; }
    moral-ambiguity leaderboard --config "$board" --output "leaderboard/$task" --title "arXiv 2410.07826 reproduction: $task"
  done
fi
