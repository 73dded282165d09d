"""Training faults, each driven through ``moral-ambiguity train``: exit code, one error line, nothing good lost.

The runs are in-process (``moral_tasks.cli.main.main``, which finds the trainer through its entry point) on the
tiny committed Llama and the bundled sample; one runs the real console script in a subprocess. Bad losses are
real third-party plugins loaded with ``--loss module:Class``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared test helpers

from conftest import BIN, FIXTURES, offline_env, run  # noqa: E402

from moral_tasks.cards import CARD_NAME  # noqa: E402
from moral_tasks.data import SAMPLE_DIR  # noqa: E402

TINY = FIXTURES / "tiny-llama"
REPO = Path(__file__).resolve().parents[2]

BAD_LOSSES = textwrap.dedent('''
    """Third-party losses with real numerical faults."""
    import torch

    def soft_ce(logits, counts):
        p = counts / counts.sum(-1, keepdim=True)
        return -(p * torch.log_softmax(logits.float(), -1)).sum(-1).mean()

    class OverflowsOnThirdCall:
        """A loss scaled by e^(50 (n - 1)) on its n-th call: float32 overflows to inf on the third."""
        def __init__(self):
            self.calls = 0
        def __call__(self, logits, counts):
            self.calls += 1
            scale = torch.exp(torch.tensor(50.0 * (self.calls - 1)))  # 1, e^50, e^100 = inf
            return soft_ce(logits, counts) * scale

    class _NaNGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()
        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    class NaNGradient:
        """A finite loss whose backward pass is NaN (as a custom autograd op with a bug would be)."""
        def __call__(self, logits, counts):
            return soft_ce(_NaNGradient.apply(logits), counts)

    CALLED = []

    def not_a_class(logits, counts):
        CALLED.append(1)
        return soft_ce(logits, counts)
''')


@pytest.fixture
def bad_losses(tmp_path, monkeypatch):
    (tmp_path / "bad_losses.py").write_text(BAD_LOSSES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("bad_losses", None)


def train_args(out, *extra):
    # float32 everywhere (the default is bf16 on a GPU): the comparisons below are to float32 tolerance.
    return ["--model_name_or_path", TINY, "--task", "moral_dilemmas", "--output_dir", out, "--data_dir", SAMPLE_DIR,
            "--per_device_train_batch_size", "4", "--seed", "0", "--disable_tqdm", "true", "--dtype", "float32",
            "--bf16", "false", *extra]


@pytest.fixture
def train(capsys, caplog):
    """``train(*argv)`` runs ``moral-ambiguity train ARGV`` in-process: (exit code, stderr, log warnings)."""
    from moral_tasks.cli.main import main

    def call(*argv):
        capsys.readouterr()
        caplog.clear()
        try:
            code = main(["train", *map(str, argv)])
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err, caplog.text

    return call


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def sgd_failure(train, out: Path, learning_rate: str, steps: int) -> str:
    """The error line of a failed plain-SGD run (no gradient clipping) saving a checkpoint every step."""
    code, err, _ = train(*train_args(out, "--optim", "sgd", "--learning_rate", learning_rate, "--max_grad_norm", "0",
                                     "--max_steps", str(steps), "--save_steps", "1", "--eval_split", "none"))
    assert code == 1
    return error_line(err)


def finite_weights(path: Path) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(t).all() for t in load_file(path).values())


@pytest.mark.slow
def test_nonfinite_loss_stops_at_the_first_bad_step(bad_losses, tmp_path):
    """Real console script: the loss overflows at step 3; checkpoint-2 survives, no adapter is written."""
    out = tmp_path / "run"
    cmd = [BIN / "moral-ambiguity", "train", *train_args(out, "--loss", "bad_losses:OverflowsOnThirdCall",
                                                           "--max_steps", "6", "--save_steps", "2",
                                                           "--eval_split", "none")]
    proc = run(cmd, cwd=tmp_path, env=offline_env(PYTHONPATH=f"{bad_losses}:{REPO}"), check=False)
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc.stderr)
    assert "diverged at step 3: the loss is inf" in line
    assert f"last good checkpoint: {out / 'checkpoint-2'}" in line
    assert not (out / "adapter_model.safetensors").exists() and not (out / CARD_NAME).exists()
    assert finite_weights(out / "checkpoint-2" / "adapter_model.safetensors")
    assert not (out / "checkpoint-4").exists()


@pytest.mark.slow
def test_nonfinite_gradient_norm_stops_before_the_optimizer_step(bad_losses, tmp_path, train):
    out = tmp_path / "run"
    code, err, _ = train(*train_args(out, "--loss", "bad_losses:NaNGradient", "--max_steps", "4",
                                     "--eval_split", "none"))
    assert code == 1
    line = error_line(err)
    assert "diverged at step 1: the gradient norm is nan" in line and "last good checkpoint: none" in line
    assert not (out / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_incomplete_checkpoint_is_skipped_on_resume(tmp_path, train):
    """A run killed while saving checkpoint-4 resumes from checkpoint-2 and ends with the same adapter."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = train_args(out, "--max_steps", "4", "--save_steps", "2", "--eval_split", "none", "--learning_rate", "1e-2",
                      "--keep_checkpoints")
    assert train(*args)[0] == 0
    uninterrupted = load_file(out / "adapter_model.safetensors")
    # What a kill during checkpoint-4's save leaves: no final adapter, no card, a half-written checkpoint.
    for name in ("adapter_model.safetensors", CARD_NAME, "README.md"):
        (out / name).unlink()
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    weights = out / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    code, err, log = train(*args)
    assert code == 0, err
    assert f"skipping incomplete checkpoint {out / 'checkpoint-4'} (no trainer_state.json" in log
    assert f"resuming from {out / 'checkpoint-2'}" in log
    assert json.loads((out / CARD_NAME).read_text())["steps"] == 4
    resumed = load_file(out / "adapter_model.safetensors")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_early_stopping_fires_on_dev_xentropy(tmp_path, train):
    """With a zero learning rate dev xentropy never improves: best at step 1, patience 2 ends the run at step 3."""
    out = tmp_path / "run"
    code, err, _ = train(*train_args(out, "--max_steps", "20", "--eval_steps", "1", "--early_stopping_patience", "2",
                                  "--learning_rate", "0", "--limit_eval", "8"))
    assert code == 0, err
    card = json.loads((out / CARD_NAME).read_text())
    assert card["steps"] == 3 and card["stopped_early"] and card["best_checkpoint_step"] == 1
    assert "stopped early" in (out / "README.md").read_text()
    assert not list(out.glob("checkpoint-*")), "intermediate checkpoints are removed after a successful run"


@pytest.mark.slow
def test_gradient_accumulation_matches_the_larger_batch(tmp_path, train):
    """2 micro-batches of 2 accumulated = one batch of 4: the same SGD update of every weight."""
    from safetensors.torch import load_file

    common = ("--use_peft", "false", "--optim", "sgd", "--learning_rate", "1.0", "--max_grad_norm", "0",
              "--max_steps", "1", "--eval_split", "none", "--lr_scheduler_type", "constant")
    assert train(*train_args(tmp_path / "b4", *common), "--per_device_train_batch_size", "4")[0] == 0
    assert train(*train_args(tmp_path / "ga", *common), "--per_device_train_batch_size", "2",
                 "--gradient_accumulation_steps", "2")[0] == 0
    base = load_file(TINY / "model.safetensors")
    b4, ga = load_file(tmp_path / "b4" / "model.safetensors"), load_file(tmp_path / "ga" / "model.safetensors")
    moved = max((b4[k].float() - base[k].float()).abs().max().item() for k in base)
    assert moved > 1e-3, "the step must change the weights for the comparison to mean anything"
    for name in base:
        torch.testing.assert_close(ga[name], b4[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_long_document_is_truncated_like_lm_eval(tmp_path):
    """A prompt longer than max_length: the trainer's answer log-probs equal lm-eval's on the truncated input."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moral_tasks.lm_eval_plugin import TASKS_DIR
    from trainers.lm_eval_requests import build_examples
    from trainers.trainer import VoteCollator, answer_position_logits

    max_length = 40  # the sample dilemmas' prompts are 47-55 tokens for this tokenizer
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={TINY},dtype=float32,max_length={max_length}", tasks=["moral_dilemmas"],
        limit=4, log_samples=True, device="cpu", batch_size=4,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        metadata={"data_dir": str(SAMPLE_DIR), "split": "test"},
    )
    # A document's first K requests are the options as scored (any further ones: other surface forms).
    harness = {s["doc"]["id"]: [float(r[0]) for r in s["filtered_resps"][:2]]
               for s in results["samples"]["moral_dilemmas"]}
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    examples = build_examples("moral_dilemmas", "test", tokenizer, max_length=max_length, data_dir=str(SAMPLE_DIR),
                              limit=4)
    untruncated = build_examples("moral_dilemmas", "test", tokenizer, max_length=10**6, data_dir=str(SAMPLE_DIR),
                                 limit=4)
    assert all(e.truncated and len(e.input_ids) == max_length for e in examples)
    assert all(len(u.input_ids) > max_length for u in untruncated)
    # What lm-eval feeds the model: the last max_length tokens of context + continuation minus its last token.
    assert [e.input_ids for e in examples] == [u.input_ids[-max_length:] for u in untruncated]
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    batch = VoteCollator(tokenizer.pad_token_id)([e.features() for e in examples])
    with torch.no_grad():
        logp = answer_position_logits(model, batch).log_softmax(-1).gather(-1, batch["answer_ids"])
    for example, row in zip(examples, logp.tolist()):
        assert row == pytest.approx(harness[example.doc_id], abs=1e-4)


def test_unknown_loss_lists_the_available_ones(tmp_path, train):
    code, err, _ = train(*train_args(tmp_path / "x", "--loss", "nope", "--max_steps", "1"))
    assert code == 1
    assert error_line(err) == ("moral-ambiguity train: error: unknown loss 'nope'; available: "
                               "dirichlet_multinomial, soft_cross_entropy (or module:Class)")
    assert not (tmp_path / "x").exists()


def test_module_attribute_that_is_not_a_loss_class_is_refused_uncalled(bad_losses, tmp_path, train):
    import bad_losses as module

    code, err, _ = train(*train_args(tmp_path / "x", "--loss", "bad_losses:not_a_class", "--max_steps", "1"))
    assert code == 1
    assert "loss 'bad_losses:not_a_class' is not a loss class but a function (not_a_class)" in error_line(err)
    assert module.CALLED == [] and not (tmp_path / "x").exists()


def test_nonexistent_model_path(tmp_path, train):
    missing = tmp_path / "no-such-model"
    code, err, _ = train(*train_args(tmp_path / "x", "--max_steps", "1")[2:], "--model_name_or_path", missing)
    assert code == 1
    assert f"--model_name_or_path '{missing}': no such folder" in error_line(err)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_huge_learning_rate_never_saves_nonfinite_weights(tmp_path, train):
    """SGD at lr 1e30: step 1's update makes step 2's loss NaN; the run stops there; checkpoint-1 is the last good."""
    out = tmp_path / "run"
    line = sgd_failure(train, out, "1e30", steps=6)
    assert "training diverged at step 2: the loss is nan" in line and "nothing non-finite was saved" in line
    assert f"last good checkpoint: {out / 'checkpoint-1'}" in line
    assert not (out / "adapter_model.safetensors").exists()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]
    assert finite_weights(out / "checkpoint-1" / "adapter_model.safetensors")


@pytest.mark.slow
def test_nonfinite_weights_are_never_saved(tmp_path, train):
    """An infinite learning rate: loss and gradients of step 1 are finite, the weights after it are not."""
    out = tmp_path / "run"
    line = sgd_failure(train, out, "inf", steps=4)
    assert "diverged at step 1: 28 trained weight tensors are not finite (first: " in line
    assert "lora_A.default.weight; not saved" in line and "last good checkpoint: none" in line
    assert not list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()
