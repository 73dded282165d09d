"""``moral-ambiguity leaderboard --config board.yaml --output DIR [--results DIR ...] [--screenshot PNG]``.

Writes ``leaderboard.{csv,md,tex,html}`` for every entry that has results. An
entry that fails (a wrong model path, an unreadable results folder) is marked
with its error in all four files, and the command exits 1 with one line per
failure; finished runs are kept for the next call. Exit 2: a bad board file, or
results that cannot share one board; no tables are written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Board, ConfigError, Entry, base_of, known_tasks, load_board

PROG = "moral-ambiguity leaderboard"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="board YAML: tasks and entries (runs what has no cached result)")
    p.add_argument("--output", required=True, help="folder for runs/ and leaderboard.{csv,md,tex,html}")
    p.add_argument("--results", nargs="*", default=[],
                   help="existing lm-eval --output_path folders to include (each model in them becomes an entry)")
    p.add_argument("--title", help="page title (default: the board file's title)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="also save a full-page screenshot of leaderboard.html at 1280 px (headless Chromium)")
    return p


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _collected(folders: list[str], results: dict, failures: dict) -> Board:
    """Entries and tasks of existing results folders; an unreadable folder is a failed entry named after it."""
    from .collect import CollectError, read_results_folder

    tasks: list[str] = []
    entries = []
    for folder in folders:
        try:
            models = read_results_folder(Path(folder))
        except CollectError as exc:
            failures[folder] = {"*": str(exc)}
            entries.append(Entry(name=folder, model="?"))
            continue
        for name, by_task in models.items():
            unique = name if name not in results else f"{name} ({folder})"
            results[unique] = {t: r for t, r in by_task.items() if t in known_tasks()}
            config = next(iter(by_task.values()))["config"]
            args = config.get("model_args") or ""
            if isinstance(args, dict):  # lm-eval writes the parsed model_args
                args = ",".join(f"{k}={v}" for k, v in args.items())
            entries.append(Entry(name=unique, model=str(config.get("model")), model_args=str(args)))
            tasks += [t for t in results[unique] if t not in tasks]
    for entry in entries:
        entry.base = base_of(entry, entries)
    return Board(tasks, entries, source=", ".join(folders))


def _run(board: Board, output: Path, results: dict, failures: dict) -> None:
    from .collect import CollectError, read_results_folder
    from .runner import run_board

    done, failed = run_board(board, output)
    for (name, task), error in failed.items():
        failures.setdefault(name, {})[task] = error
    for (name, task), folder in done.items():
        try:
            (by_task,) = read_results_folder(folder / "lm_eval").values()
            results.setdefault(name, {})[task] = by_task[task]
        except (CollectError, KeyError, ValueError) as exc:
            failures.setdefault(name, {})[task] = f"cannot read its results in {folder}: {exc}"


def main(argv: list[str] | None = None) -> int:
    from moral_tasks.data import DataError

    from .report import ReportError, build_board
    from .tables import write_csv, write_latex, write_markdown

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.config and not args.results:
        _error("give --config, --results, or both")
        return 2
    results: dict[str, dict] = {}
    failures: dict[str, dict[str, str]] = {}
    try:
        board = load_board(args.config) if args.config else None
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        if board is not None:
            _run(board, output, results, failures)
        if args.results:
            collected = _collected(args.results, results, failures)
            board = collected if board is None else Board(
                board.tasks + [t for t in collected.tasks if t not in board.tasks], board.entries + collected.entries,
                board.metadata, board.compare, f"{board.source}, {collected.source}", board.title)
        summary = build_board(board, results, failures, title=args.title)
    except (ConfigError, ReportError, DataError, OSError) as exc:
        _error(str(exc))
        return 2
    from .html import render_html

    paths = {"csv": output / "leaderboard.csv", "md": output / "leaderboard.md", "tex": output / "leaderboard.tex",
             "html": output / "leaderboard.html"}
    write_csv(summary, paths["csv"])
    write_markdown(summary, paths["md"])
    write_latex(summary, paths["tex"])
    render_html(summary, paths["html"])
    print(paths["md"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    if args.screenshot:
        from .screenshot import ScreenshotError, screenshot

        try:
            screenshot(paths["html"], Path(args.screenshot))
        except ScreenshotError as exc:
            _error(str(exc))
            return 2
        print(f"screenshot: {args.screenshot}")
    if failures:
        for name, errors in failures.items():
            for task, error in errors.items():
                _error(f"entry {name}" + ("" if task == "*" else f" on {task}") + f" failed: {error}")
        _error(f"{len(failures)} of {len(board.entries)} entries failed; the tables mark them and show the others")
        return 1
    return 0
