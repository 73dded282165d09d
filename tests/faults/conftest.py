"""Fault catalogue helpers: run the real entry point and read what a user would see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single ``error:`` line on stderr of a failed run, after checking there is no traceback."""
        assert self.code not in (0, None), f"expected a failure, got exit {self.code}\n{self.out}\n{self.err}"
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if "error:" in line]
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
