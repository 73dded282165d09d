"""``moral-ambiguity leaderboard --config board.yaml --output DIR [--results DIR ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Board, ConfigError, Entry, load_board


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moral-ambiguity leaderboard", description=__doc__)
    p.add_argument("--config", help="board YAML: tasks and entries (runs what has no cached result)")
    p.add_argument("--output", required=True, help="folder for runs/, leaderboard.{csv,md,html}")
    p.add_argument("--results", nargs="*", default=[],
                   help="existing lm-eval --output_path folders to include (each model in them becomes an entry)")
    p.add_argument("--title", default="moral-ambiguity leaderboard")
    return p


def _collected_board(folders: list[str], results: dict) -> Board:
    from moral_tasks.prompts import TASKS

    from .collect import read_results_folder
    from .config import DEBIASED

    tasks: list[str] = []
    entries = []
    for folder in folders:
        for name, by_task in read_results_folder(Path(folder)).items():
            unique = name if name not in results else f"{name} ({folder})"
            results[unique] = by_task
            entries.append(Entry(name=unique, model=str(by_task[next(iter(by_task))]["config"].get("model"))))
            tasks += [t for t in by_task if (t in TASKS or t == DEBIASED) and t not in tasks]
    return Board(tasks, entries, source=", ".join(folders))


def main(argv: list[str] | None = None) -> int:
    from .collect import read_results_folder
    from .html import render_html
    from .report import build_board, write_csv, write_markdown
    from .runner import run_board

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.config and not args.results:
        print("moral-ambiguity leaderboard: error: give --config, --results, or both", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        board = load_board(args.config) if args.config else None
        if board is not None:
            for (name, task), folder in run_board(board, output).items():
                results.setdefault(name, {}).update(read_results_folder(folder / "lm_eval").popitem()[1])
        if args.results:
            collected = _collected_board(args.results, results)
            board = collected if board is None else Board(
                board.tasks + [t for t in collected.tasks if t not in board.tasks], board.entries + collected.entries,
                board.metadata, board.compare, f"{board.source}, {collected.source}")
    except (ConfigError, RuntimeError) as exc:
        print(f"moral-ambiguity leaderboard: error: {exc}", file=sys.stderr)
        return 2
    summary = build_board(board, results, title=args.title)
    write_csv(summary, output / "leaderboard.csv")
    write_markdown(summary, output / "leaderboard.md")
    render_html(summary, output / "leaderboard.html")
    print((output / "leaderboard.md").read_text())
    print(f"written: {output / 'leaderboard.csv'}, {output / 'leaderboard.md'}, {output / 'leaderboard.html'}")
    return 0
