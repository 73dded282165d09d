"""Fault catalogue helpers: run the real entry point and read what a user would see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        """The ``error:`` lines on stderr (a run may go on past a failed entry), after checking there is no traceback."""
        assert "Traceback" not in self.err, self.err
        return [line for line in self.err.splitlines() if "error:" in line]

    def error_line(self) -> str:
        """The single ``error:`` line on stderr of a failed run, after checking there is no traceback."""
        assert self.code not in (0, None), f"expected a failure, got exit {self.code}\n{self.out}\n{self.err}"
        lines = self.error_lines()
        assert len(lines) == 1, f"expected one error line on stderr, got:\n{self.err}"
        return lines[0]


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``moral-ambiguity ARGV`` in-process and returns its :class:`Outcome`."""
    from moral_tasks.cli.main import main

    def run(*argv) -> Outcome:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return Outcome(code, out, err)

    return run


@pytest.fixture
def rescore_error(cli):
    """``rescore_error(*argv)``: ``moral-ambiguity rescore ARGV`` must fail with a usage-error exit (2) and one
    ``moral-ambiguity: error:`` message; returns stderr."""

    def call(*argv) -> str:
        got = cli("rescore", *argv)
        assert got.code == 2 and got.err.startswith("moral-ambiguity: error: ") and "Traceback" not in got.err, got.err
        return got.err

    return call
