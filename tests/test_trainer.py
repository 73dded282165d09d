"""The vote trainer: token-for-token agreement with lm-eval, adapters lm-eval loads, plugins, resume."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from conftest import BIN, offline_env, read_results, run
from moral_tasks.data import SAMPLE_DIR
from trainers.lm_eval_requests import build_examples
from trainers.trainer import VoteCollator, answer_position_logits

pytestmark = pytest.mark.slow


def lm_eval_run(model_args, task, out, cwd, *extra, split="test"):
    cmd = [BIN / "lm_eval", "--model", "hf", "--model_args", model_args, "--tasks", task, "--device", "cpu",
           "--batch_size", "4", "--metadata", json.dumps({"data_dir": str(SAMPLE_DIR), "split": split}),
           "--log_samples", "--output_path", out, *extra]
    run(cmd, cwd=cwd)
    return read_results(out)


@pytest.mark.parametrize("chat", [False, True])
def test_trainer_logprobs_equal_lm_eval_loglikelihoods(tiny_model, tmp_path, chat):
    """Same model, same documents: the trainer's answer-token log-probs are lm-eval's log-likelihoods."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    system = "Judge like the crowd would."
    extra = ["--limit", "6", "--system_instruction", system] + (["--apply_chat_template"] if chat else [])
    tasks = ["moral_dilemmas", "moral_anecdotes"]
    _, samples = lm_eval_run(f"pretrained={tiny_model},dtype=float32", ",".join(tasks), tmp_path / "o", tmp_path, *extra)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    for task in tasks:
        harness = {s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples[task]}
        # What lm-eval sent: under a chat template it drops the space before the choice and the
        # system instruction becomes a system turn; without one it is prepended to the prompt.
        args = samples[task][0]["arguments"]
        assert [a["arg_1"] for a in args.values()][:2] == (["A", "B"] if chat else [" A", " B"])
        ctx = args["gen_args_0"]["arg_0"]
        if chat:
            assert f"<|system|>\n{system}" in ctx and ctx.endswith("<|assistant|>\n")
        else:
            assert ctx.startswith(system) and ctx.endswith("Answer:")

        examples, source = build_examples(task, "test", tokenizer, data_dir=str(SAMPLE_DIR), chat_template=chat,
                                          system_instruction=system, limit=6)
        assert source.startswith("sample:")
        assert len({len(e.input_ids) for e in examples}) > 1, "batch must mix lengths to exercise left padding"
        batch = VoteCollator(tokenizer.pad_token_id)([vars(e) for e in examples])
        with torch.no_grad():
            logp = answer_position_logits(model, batch).log_softmax(-1).gather(-1, batch["answer_ids"])
        assert {e.doc_id for e in examples} == set(harness)
        for example, row in zip(examples, logp.tolist()):
            # lm-eval scores the shared continuation prefix too (the template's trailing "\n"):
            # add its log-probability, computed here from a plain unpadded forward pass.
            shared = 0.0
            if example.n_prefix:
                ids = torch.tensor([example.input_ids])
                with torch.no_grad():
                    full = model(input_ids=ids).logits[0].log_softmax(-1)
                for pos in range(len(example.input_ids) - example.n_prefix, len(example.input_ids)):
                    shared += full[pos - 1, example.input_ids[pos]].item()
            assert [v + shared for v in row] == pytest.approx(harness[example.doc_id], abs=1e-4)
            # ... and the option distribution, which every loss and metric sees, is lm-eval's exactly.
            h = torch.tensor(harness[example.doc_id]).log_softmax(-1)
            assert torch.tensor(row).log_softmax(-1).tolist() == pytest.approx(h.tolist(), abs=1e-4)
        assert {e.n_prefix for e in examples} == ({1} if chat else {0})
        expected = ["A", "B"] if chat else [" A", " B"]
        assert [tokenizer.decode(i) for i in examples[0].answer_ids[:2]] == expected


def train_cmd(model, out, loss, *extra):
    return [BIN / "moral-ambiguity", "train", "--model", model, "--task", "moral_dilemmas", "--loss", loss,
            "--output", out, "--data-dir", SAMPLE_DIR, "--batch-size", "8", "--seed", "0", *extra]


@pytest.mark.parametrize("loss", ["soft_cross_entropy", "dirichlet_multinomial"])
def test_training_lowers_train_xentropy_through_lm_eval_peft(board_run, adapters, loss):
    """Each loss's adapter, evaluated by the real lm_eval CLI with peft= (the board's runs), beats the base."""
    card = json.loads((adapters.get(loss) / "moral_ambiguity_card.json").read_text())
    assert card["loss"] == loss and card["steps"] == 200 and card["adapter"] == "lora"
    assert card["train_data"].startswith("sample:scruples-v1.0/dilemmas/train rows=40")
    assert (adapters.get(loss) / "adapter_config.json").exists()
    xent = {r["entry"]: float(r["value"]) for r in board_run.rows if r["metric"] == "xentropy"}
    name = {"soft_cross_entropy": "tiny-sce", "dirichlet_multinomial": "tiny-dm"}[loss]
    assert xent[name] < xent["tiny-base"] - 0.05, xent


def test_dev_evaluation_early_stopping_and_resume(tiny_model, tmp_path):
    out = tmp_path / "run"
    run(train_cmd(tiny_model, out, "soft_cross_entropy", "--max-steps", "6", "--eval-steps", "3"), cwd=tmp_path)
    first = json.loads((out / "moral_ambiguity_card.json").read_text())
    assert set(first["final_dev_metrics"]) >= {"xentropy", "dirichlet_nll", "acc", "jsd"}
    assert first["eval_data"].startswith("sample:scruples-v1.0/dilemmas/dev")
    assert (out / "checkpoint-6").is_dir()
    # An "interrupted" run continued with a larger budget resumes from checkpoint-6.
    proc = run(train_cmd(tiny_model, out, "soft_cross_entropy", "--max-steps", "9", "--eval-steps", "3"), cwd=tmp_path)
    assert "resuming from" in proc.stderr and "checkpoint-6" in proc.stderr
    assert json.loads((out / "moral_ambiguity_card.json").read_text())["steps"] == 9


def test_third_party_loss_package_installed_separately(tiny_model, tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "my_vote_losses").mkdir(parents=True)
    (pkg / "my_vote_losses" / "__init__.py").write_text(textwrap.dedent("""
        import torch

        class TotalVariation:
            \"\"\"0.5 * sum |softmax(z) - p|: a third-party loss.\"\"\"
            def __call__(self, logits, counts):
                p = counts / counts.sum(-1, keepdim=True)
                return 0.5 * (torch.softmax(logits.float(), -1) - p).abs().sum(-1).mean()
    """))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [project]
        name = "my-vote-losses"
        version = "0.1"
        [project.entry-points."moral_ambiguity.losses"]
        total_variation = "my_vote_losses:TotalVariation"
    """))
    target = tmp_path / "site"
    run([BIN / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", target, pkg],
        cwd=tmp_path)
    env = offline_env(PYTHONPATH=str(target))
    assert "total_variation" in run([BIN / "moral-ambiguity", "losses"], cwd=tmp_path, env=env).stdout
    out = tmp_path / "adapter"
    run(train_cmd(tiny_model, out, "total_variation", "--max-steps", "3", "--eval-split", "none"), cwd=tmp_path, env=env)
    assert json.loads((out / "moral_ambiguity_card.json").read_text())["loss"] == "total_variation"
    # An unknown loss fails before any model is loaded, naming what exists.
    proc = run(train_cmd(tiny_model, tmp_path / "x", "nope", "--max-steps", "1"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "unknown loss 'nope'" in proc.stderr
