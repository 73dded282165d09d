"""``moral-ambiguity`` console script: eval, rescore, data, demo, make-tiny-model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..prompts import GROUP
from . import fetch_model

# Commands that live in other packages of this distribution (or a third party's), found through
# entry points so that the scoring core never imports the trainers: {name: extra that provides it}.
COMMAND_GROUP = "moral_ambiguity.commands"
PLUGIN_COMMANDS = {"train": "train", "train-encoder": "train"}
# Modules that only an extra installs (pyproject.toml): a missing one is named with the extra that brings it.
MODULE_EXTRAS = {"trl": "train", "evaluate": "train", "jinja2": "leaderboard", "matplotlib": "leaderboard",
                 "openai": "api", "gguf": "real-model"}


def _run_plugin_command(name: str, argv: list[str]) -> int:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=COMMAND_GROUP) if ep.name == name]
    if not found:
        print(f"moral-ambiguity: error: command {name!r} is not installed "
              f"(reinstall the package: pip install -e '.[{PLUGIN_COMMANDS[name]}]')", file=sys.stderr)
        return 2
    try:
        command = found[0].load()
    except ImportError as exc:
        print(f"moral-ambiguity: error: {name} needs the [{PLUGIN_COMMANDS[name]}] extra "
              f"(pip install 'moral-ambiguity[{PLUGIN_COMMANDS[name]}]'): {exc}", file=sys.stderr)
        return 2
    return command(argv)


def _cmd_eval(args: argparse.Namespace, rest: list[str]) -> int:
    """Run the real lm-eval CLI with our task folder on the include path (works with the hook off)."""
    from lm_eval.__main__ import cli_evaluate

    from ..lm_eval_plugin import TASKS_DIR, install_table, install_task_index_cache

    # The hook may be off: the table is printed the same way, and lm-eval's own task index is cached.
    install_table()
    install_task_index_cache()
    argv = list(rest)
    if not any(a == "--tasks" or a.startswith("--tasks=") for a in argv):
        argv += ["--tasks", GROUP]
    if not any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        argv += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0


def _data_dir_arg(args) -> Path | None:
    return Path(args.data_dir) if getattr(args, "data_dir", None) else None


def _checksum_arg(text: str) -> tuple[str, str]:
    from ..data import DataError
    from ..data.download import parse_checksum

    try:
        return parse_checksum(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_data_fetch(args) -> int:
    from ..data import DataError
    from ..data.download import fetch

    expected = {}
    for dataset, digest in args.sha256:
        if dataset in expected:
            raise DataError(f"--sha256 gives {dataset} twice")
        if dataset not in args.dataset:
            raise DataError(f"--sha256 gives a checksum for {dataset}, which is not being fetched (--dataset {' '.join(args.dataset)})")
        expected[dataset] = digest
    try:
        dest = fetch(args.dataset, url_base=args.url, expected_sha256=expected, dest=_data_dir_arg(args),
                     progress=not args.quiet, force=args.force)
    except OSError as exc:  # the destination: not writable, full, a file where a folder should be
        raise DataError(f"cannot write the data: {exc}") from None
    print(f"Scruples data in {dest}")
    return 0


def _cmd_data_info(args, verify: bool) -> int:
    """Counts per task and split; with ``verify``, also checksums and a non-zero exit on any problem."""
    from rich.console import Console
    from rich.table import Table

    from ..data import SPLITS, DataError, cache_dir, load_split
    from ..data.download import verify_manifest
    from ..prompts import TASKS

    table = Table(title="Scruples data")
    for column in ("task", "split", "source", "rows", "skipped (0 votes)", "mean votes", "path"):
        table.add_column(column)
    problems = []
    for spec in TASKS.values():
        for split in SPLITS[spec.dataset]:
            try:
                loaded = load_split(spec, split, _data_dir_arg(args))
            except DataError as exc:
                problems.append(str(exc))
                continue
            mean_votes = sum(map(sum, loaded.counts)) / len(loaded.counts)
            table.add_row(spec.name, split, loaded.source, str(len(loaded.rows)), str(loaded.skipped_zero_votes),
                          f"{mean_votes:.1f}", str(loaded.path))
    if verify:
        problems += verify_manifest(_data_dir_arg(args) or cache_dir())
    console = Console()
    console.print(table)
    for problem in problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False, soft_wrap=True)
    if verify:
        console.print("[green]all files valid[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]")
        return 1 if problems else 0
    return 0


def _cmd_data_path(args) -> int:
    from ..data import cache_dir

    print(cache_dir())
    return 0


def _cmd_make_tiny_model(args) -> int:
    from .tiny_model import make_tiny_model

    path = make_tiny_model(args.output, hidden_size=args.hidden_size, layers=args.layers, seed=args.seed)
    print(f"tiny random Llama written to {path}")
    return 0


def _cmd_rescore(args) -> int:
    from ..records import RecordFormatError
    from ..rescore import RescoreError, main as rescore_main
    from ..scoring import CorpusError

    try:
        return rescore_main(args.results_dir, dev=args.dev, output=args.output)
    except (RecordFormatError, RescoreError, CorpusError) as exc:
        print(f"moral-ambiguity: error: {exc}", file=sys.stderr)
        return 2


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(model_dir=args.model, output_path=args.output_path, limit=args.limit)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moral-ambiguity",
        description="Score how well a language model's probabilities match human moral-judgment distributions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "eval",
        help="run lm_eval on the moral_ambiguity tasks; other arguments go to lm_eval unchanged",
        description="Equivalent to `lm_eval --include_path <our tasks> --tasks moral_ambiguity ARGS`.",
    )

    rescore = sub.add_parser(
        "rescore", help="recompute every number of an lm_eval run from its samples files (+ dev-fitted calibration)",
        description="Recompute every metric, interval and agreement slice of an lm_eval run (--log_samples) from its "
                    "samples files, with the code lm_eval's aggregations use. With --dev, the temperature is fitted on "
                    "the dev run's records and applied to this run (Scruples' calibration protocol).")
    rescore.add_argument("results_dir", help="lm_eval --output_path folder of one model (or the model's subfolder)")
    rescore.add_argument("--dev", metavar="DEV_RESULTS_DIR", help="the same model's run on the dev split")
    rescore.add_argument("--output", metavar="FILE", help="write the JSON here instead of standard output")

    data = sub.add_parser("data", help="fetch, inspect and verify the Scruples files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download the official Scruples v1.0 tarballs into the cache")
    fetch.add_argument("--dataset", nargs="+", default=["anecdotes", "dilemmas"], choices=["anecdotes", "dilemmas"])
    fetch.add_argument("--url", help="base URL holding anecdotes.tar.gz and dilemmas.tar.gz (default: the official one)")
    fetch.add_argument("--sha256", nargs="+", default=[], type=_checksum_arg, metavar="DATASET=HEX",
                       help="expected archive SHA-256 per dataset, e.g. dilemmas=<64 hex digits>")
    fetch.add_argument("--data-dir", help="download here instead of the user cache")
    fetch.add_argument("--force", action="store_true",
                       help="download again from the start, even if the data or a partial download is present")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, help_text in (("info", "rows, skipped rows and votes per task and split"),
                            ("verify", "validate every row and checksum; exit 1 on any problem")):
        p = data_sub.add_parser(name, help=help_text)
        p.add_argument("--data-dir", help="inspect this folder instead of the default search order")
    data_sub.add_parser("path", help="print the cache folder")

    tiny = sub.add_parser("make-tiny-model", help="write a small random Llama and a locally built tokenizer")
    tiny.add_argument("output", help="output folder")
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)

    sub.add_parser("train", add_help=False, help="fine-tune toward human vote distributions (PEFT adapter); see train --help")
    sub.add_parser("train-encoder", add_help=False,
                   help="train BERT/RoBERTa-style baselines with the same losses; see train-encoder --help")
    sub.add_parser("leaderboard", add_help=False,
                   help="run and compare models, adapters and API models; see leaderboard --help")
    sub.add_parser("best", add_help=False, help="BEST oracle ceiling of vote counts (JSON); see best --help")
    sub.add_parser("losses", help="list the available losses (built-in and installed plugins)")

    fetch_model.add_parser(sub)

    demo = sub.add_parser("demo", help="run the four tasks of the moral_ambiguity group on the bundled sample with a tiny local model, offline")
    demo.add_argument("--model", help="model folder (default: a fresh tiny random Llama)")
    demo.add_argument("--output-path", help="also write lm-eval results (and samples) here")
    demo.add_argument("--limit", type=int, help="documents per task")
    return parser


def _require_extra(extra: str) -> None:
    from importlib.util import find_spec

    for module, provider in MODULE_EXTRAS.items():
        if provider == extra and find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:
        module = (exc.name or "").partition(".")[0]
        if module not in MODULE_EXTRAS:
            raise
        extra = MODULE_EXTRAS[module]
        print(f"moral-ambiguity: error: {module} is not installed; it comes with the [{extra}] extra: "
              f"pip install 'moral-ambiguity[{extra}]'", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["eval"]:
        # Everything after `eval` belongs to lm_eval, including its --help.
        return _cmd_eval(argparse.Namespace(command="eval"), argv[1:])
    if argv[:1] and argv[0] in PLUGIN_COMMANDS:
        return _run_plugin_command(argv[0], argv[1:])
    if argv[:1] == ["leaderboard"]:
        _require_extra("leaderboard")  # before any model runs, not when the page is drawn
        from ..leaderboard.cli import main as leaderboard_main

        return leaderboard_main(argv[1:])
    if argv[:1] == ["best"]:
        from ..metrics.best import main as best_main

        return best_main(argv[1:])
    args = parser.parse_args(argv)
    from ..data import DataError
    from ..data.download import FetchError

    try:
        if args.command == "rescore":
            return _cmd_rescore(args)
        if args.command == "data":
            if args.data_command == "fetch":
                return _cmd_data_fetch(args)
            if args.data_command == "path":
                return _cmd_data_path(args)
            return _cmd_data_info(args, verify=args.data_command == "verify")
        if args.command == "make-tiny-model":
            return _cmd_make_tiny_model(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "fetch-model":
            return fetch_model.run(args)
        if args.command == "losses":
            from loss_plugins import list_losses

            print("\n".join(list_losses()))
            return 0
    except (DataError, FetchError, fetch_model.FetchModelError) as exc:
        print(f"moral-ambiguity: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
