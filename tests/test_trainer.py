"""The vote trainer: token-for-token agreement with lm-eval, adapters lm-eval loads, plugins, resume."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import ADAPTER_STEPS, BIN, offline_env, read_results, run
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.prompts import get_task
from trainers.lm_eval_requests import build_examples
from trainers.trainer import VoteCollator, answer_position_logits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@pytest.mark.parametrize("chat", [False, True])
def test_trainer_logprobs_equal_lm_eval_loglikelihoods(tiny_model, task_manager, chat):
    """Same model, same documents: the trainer's answer-token log-probs are lm-eval's log-likelihoods."""
    import lm_eval
    from transformers import AutoModelForCausalLM, AutoTokenizer

    system = "Judge like the crowd would."
    tasks = ["moral_dilemmas", "moral_anecdotes"]
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_model},dtype=float32", tasks=tasks, limit=6, log_samples=True,
        device="cpu", batch_size=4, system_instruction=system, apply_chat_template=chat,
        task_manager=task_manager, metadata={"data_dir": str(SAMPLE_DIR), "split": "test"},
    )
    samples = results["samples"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    for task in tasks:
        k = len(get_task(task).labels)  # the first K requests are the options as scored
        harness = {s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"][:k]] for s in samples[task]}
        # What lm-eval sent: under a chat template it drops the space before the choice and the
        # system instruction becomes a system turn; without one it is prepended to the prompt.
        args = samples[task][0]["arguments"]  # in-process: (context, continuation) per option
        assert [a[1] for a in args][:2] == (["A", "B"] if chat else [" A", " B"])
        ctx = args[0][0]
        if chat:
            assert f"<|system|>\n{system}" in ctx and ctx.endswith("<|assistant|>\n")
        else:
            assert ctx.startswith(system) and ctx.endswith("Answer:")

        examples = build_examples(task, "test", tokenizer, max_length=4096, data_dir=str(SAMPLE_DIR),
                                  chat_template=chat, system_instruction=system, limit=6)
        assert not any(e.truncated for e in examples)
        assert len({len(e.input_ids) for e in examples}) > 1, "batch must mix lengths to exercise left padding"
        batch = VoteCollator(tokenizer.pad_token_id)([e.features() for e in examples])
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


def train_args(model, out, loss, *extra):
    return ["--model_name_or_path", model, "--task", "moral_dilemmas", "--loss", loss, "--output_dir", out,
            "--data_dir", SAMPLE_DIR, "--per_device_train_batch_size", "8", "--seed", "0", *extra]


def train_cmd(model, out, loss, *extra):
    return [BIN / "moral-ambiguity", "train", *train_args(model, out, loss, *extra)]


@pytest.fixture
def train_in_process(capsys):
    from trainers.train import main

    def call(*argv):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 0, err
        return err

    return call


def test_model_card_command_reproduces_the_dev_metrics(tiny_model, tmp_path, train_in_process):
    """The README's lm_eval command, run as written, gives the dev metrics the card reports."""
    import hashlib
    import shlex

    out = tmp_path / "run"
    train_in_process(*train_args(tiny_model, out, "soft_cross_entropy", "--max_steps", "4", "--eval_steps", "2",
                                 "--limit_eval", "12", "--learning_rate", "3e-3"))
    card = json.loads((out / "moral_ambiguity_card.json").read_text())
    readme = (out / "README.md").read_text()
    dev_file = SAMPLE_DIR / "dilemmas" / "dev.scruples-dilemmas.jsonl"
    sha = hashlib.sha256(dev_file.read_bytes()).hexdigest()
    assert card["eval_data"]["sha256"] == sha and sha in readme
    assert card["eval_data"]["rows_used"] == 12 and "12 of 40 documents" in readme
    assert f"base_model: {tiny_model}" in readme and "`soft_cross_entropy`" in readme
    assert "[More Information" not in readme
    best = card["best_checkpoint_step"]  # dev evaluations at steps 2 and 4; the better one's weights are kept
    steps = "4 |" if best == 4 else "4 (the weights and dev metrics are those of the best dev checkpoint, step 2) |"
    assert best in (2, 4) and f"| Steps | {steps}" in readme and "r=16, alpha=32, dropout=0.0" in readme
    assert f"| xentropy | {card['final_dev_metrics']['xentropy']:.4f} |" in readme
    assert not list(out.glob("checkpoint-*"))
    assert card["lm_eval_command"] in readme
    cmd = shlex.split(card["lm_eval_command"])
    assert cmd[0] == "lm_eval"
    run([BIN / "lm_eval", *cmd[1:], "--device", "cpu", "--output_path", tmp_path / "eval"], cwd=tmp_path)
    results, _ = read_results(tmp_path / "eval")
    for metric in ("xentropy", "acc", "dirichlet_nll"):
        assert results["results"]["moral_dilemmas"][f"{metric},none"] == pytest.approx(
            card["final_dev_metrics"][metric], abs=1e-4), metric


def test_yaml_config_and_pinned_lora_defaults(tiny_model, tmp_path, train_in_process):
    """A TRL-style --config file sets options, the command line overrides it; our LoRA defaults apply."""
    config = tmp_path / "train.yaml"
    config.write_text(textwrap.dedent(f"""
        model_name_or_path: {tiny_model}
        task: moral_anecdotes
        data_dir: {SAMPLE_DIR}
        lora_r: 4
        max_steps: 50
        eval_split: none
        per_device_train_batch_size: 4
    """))
    out = tmp_path / "run"
    train_in_process("--config", config, "--output_dir", out, "--max_steps", "2")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (4, 8, 0.0)
    # all-linear: every projection of the tiny Llama, but not the LM head.
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    card = json.loads((out / "moral_ambiguity_card.json").read_text())
    assert card["task"] == "moral_anecdotes" and card["steps"] == 2 and card["dtype"] == "float32"
    assert (out / "tokenizer.json").exists() and (out / "README.md").exists()
    assert card["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def test_resume_with_kept_checkpoints(tiny_model, tmp_path, capsys, caplog):
    """An interrupted run continued with a larger budget resumes from its last checkpoint."""
    from trainers.train import main

    out = tmp_path / "run"
    extra = ("--eval_steps", "3", "--limit_eval", "8", "--keep_checkpoints")
    assert main(list(map(str, train_args(tiny_model, out, "soft_cross_entropy", "--max_steps", "6", *extra)))) == 0
    first = json.loads((out / "moral_ambiguity_card.json").read_text())
    assert set(first["final_dev_metrics"]) >= {"xentropy", "dirichlet_nll", "acc", "jsd"}
    assert first["eval_data"]["split"] == "dev"
    assert (out / "checkpoint-6").is_dir()
    caplog.clear()
    assert main(list(map(str, train_args(tiny_model, out, "soft_cross_entropy", "--max_steps", "9", *extra)))) == 0
    assert f"resuming from {out / 'checkpoint-6'}" in caplog.text
    assert json.loads((out / "moral_ambiguity_card.json").read_text())["steps"] == 9
    # Without a checkpoint to resume from, a finished folder is never overwritten.
    capsys.readouterr()
    assert main(list(map(str, train_args(tiny_model, out, "soft_cross_entropy", "--no_resume")))) == 1
    assert "already holds a trained model" in capsys.readouterr().err


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
    env = offline_env(PYTHONPATH=os.pathsep.join([str(target), str(Path(__file__).resolve().parents[1])]))
    assert "total_variation" in run([BIN / "moral-ambiguity", "losses"], cwd=tmp_path, env=env).stdout
    out = tmp_path / "adapter"
    run(train_cmd(tiny_model, out, "total_variation", "--max_steps", "3", "--eval_split", "none"), cwd=tmp_path, env=env)
    assert json.loads((out / "moral_ambiguity_card.json").read_text())["loss"] == "total_variation"


def test_same_command_trains_the_same_adapter(tiny_model, tmp_path, train_in_process):
    """The LoRA matrices are drawn after seeding, not from whatever the process's generator has become."""
    import torch
    from safetensors.torch import load_file

    weights = []
    for run_dir in ("a", "b"):
        torch.rand(1000)  # the process has drawn random numbers before (another model, another test)
        out = tmp_path / run_dir
        train_in_process(*train_args(tiny_model, out, "soft_cross_entropy", "--max_steps", "2", "--eval_split", "none"))
        weights.append(load_file(out / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_card_names_a_best_checkpoint_only_when_its_weights_were_loaded(tiny_model, tmp_path, train_in_process):
    """Trainer tracks the best dev step whenever it has a metric; the weights are that step's only with
    load_best_model_at_end, so without it the card must not say so."""
    out = tmp_path / "run"
    train_in_process(*train_args(tiny_model, out, "soft_cross_entropy", "--max_steps", "3", "--eval_steps", "1",
                                 "--limit_eval", "8", "--load_best_model_at_end", "false"))
    card = json.loads((out / "moral_ambiguity_card.json").read_text())
    assert card["steps"] == 3 and card["best_checkpoint_step"] is None
    assert "| Steps | 3 |" in (out / "README.md").read_text()
