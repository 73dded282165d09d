"""The files under examples/ are valid for the tools that read them, and agree with each other."""

from __future__ import annotations

import re
import subprocess
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
