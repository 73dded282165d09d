"""A small random Llama and a locally trained tokenizer, for offline demos and tests.

No hub access exists in CI, so everything is built here: a GPT-2-style
byte-level BPE tokenizer trained on the bundled sample (its prompts and
stories), with a BOS post-processor and a chat template, and a randomly
initialised ``LlamaForCausalLM``.  The same seed gives the same weights.
"""

from __future__ import annotations

from pathlib import Path

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
# A minimal chat template with a system role, so --apply_chat_template and
# --system_instruction behave as with a real instruction-tuned model.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus() -> list[str]:
    from ..data import SAMPLE_DIR, read_jsonl
    from ..prompts import TASKS

    texts = []
    for spec in TASKS.values():
        for path in sorted((SAMPLE_DIR / spec.dataset).glob("*.jsonl")):
            texts += [spec.prompt(row) + " " + " ".join(spec.letters) for _, row in read_jsonl(path)]
    return texts


def build_tokenizer(vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from ..prompts import TASKS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    # The harness relies on every answer option being one token, with and without the leading space.
    letters = sorted({letter for spec in TASKS.values() for letter in spec.letters})
    for letter in letters:
        for text in (letter, " " + letter):
            ids = fast(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise RuntimeError(f"tiny tokenizer splits {text!r} into {len(ids)} tokens")
    return fast


def make_tiny_model(output_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                    seed: int = 0, vocab_size: int = 2048) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
