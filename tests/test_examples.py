"""The files under examples/ are valid for the tools that read them, and agree with each other."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STUDY = EXAMPLES / "reproduce_2410.07826"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_is_read_by_accelerate(path):
    """accelerate's own reader refuses unknown or misspelt keys."""
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 2 and config.compute_environment.value == "LOCAL_MACHINE"


@pytest.mark.parametrize("path", sorted(STUDY.glob("board_*.yaml")), ids=lambda p: p.name)
def test_study_board_is_a_valid_board_with_every_adapter_paired_to_its_base(path):
    from moral_tasks.leaderboard.config import load_board

    board = load_board(path)
    (task,) = board.tasks
    adapters = [e for e in board.entries if "peft" in e.args()]
    assert len(adapters) == 6  # 3 base models x 2 losses
    assert all(e.base and e.base.endswith("-base") for e in adapters)
    # Each adapter was trained on the board's task: run.sh writes adapters/<task>/<model>-<loss>.
    assert all(e.args()["peft"].startswith(f"adapters/{task}/") for e in adapters)
    assert {e.model for e in board.entries} == {"hf", "openai-chat-logprobs", "hf-encoder-classifier"}


def test_run_script_writes_what_the_boards_read():
    script = (STUDY / "run.sh").read_text()
    subprocess.run(["bash", "-n", str(STUDY / "run.sh")], check=True)
    models = dict(re.findall(r"\[(\w+)\]=(\S+)", script.split("declare -A MODELS=(")[1].split(")")[0]))
    losses = dict(re.findall(r"\[(\w+)\]=(\w+)", script.split("declare -A LOSSES=(")[1].split(")")[0]))
    encoders = dict(re.findall(r"\[(\w+)\]=(\S+)", script.split("declare -A ENCODERS=(")[1].split(")")[0]))
    tasks = re.search(r"TASKS=\(([^)]*)\)", script).group(1).split()
    for task in tasks:
        board = (STUDY / f"board_{task.removeprefix('moral_')}.yaml").read_text()
        for short, hub_id in models.items():
            assert f"pretrained={hub_id},dtype=bfloat16\"" in board
            for loss in losses:
                assert f"pretrained={hub_id},dtype=bfloat16,peft=adapters/{task}/{short}-{loss}\"" in board
        for enc in encoders:
            for loss in losses:
                assert f"pretrained=enc/{enc}-{loss}\"" in board
    from loss_plugins import list_losses

    assert set(losses.values()) <= set(list_losses())


def _samples_file(path: Path, logliks: dict[str, list[float]], q: dict[str, list[float]]) -> Path:
    from moral_tasks.records import RECORD_KEY, Record

    lines = []
    for doc_id, ll in logliks.items():
        record = Record(task="moral_dilemmas", doc_id=doc_id, labels=["FIRST", "SECOND"], option_loglik=ll,
                        q=q[doc_id], option_mass=0.5, counts=[3, 2], scoring={})
        lines.append(json.dumps({"doc_id": len(lines), RECORD_KEY: record.to_json(), "xentropy": doc_id}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _compare_backends():
    sys.path.insert(0, str(EXAMPLES))
    import compare_backends

    return compare_backends


def test_compare_backends_reports_the_largest_differences(tmp_path, capsys):
    a = _samples_file(tmp_path / "a.jsonl", {"d1": [-0.5, -1.2], "d2": [-2.0, -0.1]},
                      {"d1": [0.66, 0.34], "d2": [0.13, 0.87]})
    b = _samples_file(tmp_path / "b.jsonl", {"d2": [-2.01, -0.1], "d1": [-0.52, -1.15]},
                      {"d1": [0.65, 0.35], "d2": [0.13, 0.87]})
    assert _compare_backends().main([str(a), str(b), "--tolerance", "0.06"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 2 and report["worst_document"] == "d1"
    assert report["max_abs_loglik_diff"] == pytest.approx(0.05)
    assert report["mean_abs_loglik_diff"] == pytest.approx((0.05 + 0.01) / 2)
    assert report["max_abs_q_diff"] == pytest.approx(0.01)
    assert _compare_backends().main([str(a), str(b), "--tolerance", "0.04"]) == 1
    assert "document d1 differs by 0.05 nats" in capsys.readouterr().err


def test_compare_backends_refuses_different_documents_and_old_files(tmp_path, capsys):
    a = _samples_file(tmp_path / "a.jsonl", {"d1": [-0.5, -1.2]}, {"d1": [0.66, 0.34]})
    b = _samples_file(tmp_path / "b.jsonl", {"d9": [-0.5, -1.2]}, {"d9": [0.66, 0.34]})
    assert _compare_backends().main([str(a), str(b)]) == 1
    assert "do not hold the same documents" in capsys.readouterr().err
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"doc_id": 0, "xentropy": {"doc_id": "d1", "q": [0.5, 0.5]}}) + "\n")
    assert _compare_backends().main([str(a), str(old)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare_backends: error: ") and f"{old}:1" in err and len(err.strip().splitlines()) == 1
