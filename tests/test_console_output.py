"""The output rules of both commands (``litgpt_min.usage.console_output``): a reader that closes the
pipe early, or a terminal encoding that cannot hold an arrow, never ends in a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from results_files import measured, results, row, write

from litgpt_min.usage import EXIT_BROKEN_PIPE

ROOT = Path(__file__).resolve().parent.parent


def _command(*args: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args", [("-m", "conformance", "validate"), ("-m", "conformance", "env"), ("-m", "litgpt_min", "--help")]
)
def test_a_reader_that_closed_the_pipe_ends_the_command_quietly(args: tuple[str, ...]) -> None:
    process = _command(*args)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `| head -1` does once it has its line: every write now fails
    err = process.stderr.read().decode()
    code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code in (EXIT_BROKEN_PIPE, 0)  # 0 only if the whole output fitted before the close
    if args[-1] != "--help":  # argparse's help exits through SystemExit, not the command's return
        assert code == EXIT_BROKEN_PIPE


def test_an_arrow_the_terminal_cannot_encode_is_escaped(tmp_path: Path) -> None:
    old = write(tmp_path / "old.json", results([row("r", measured(max_memory_gb=10.0))]))
    new = write(tmp_path / "new.json", results([row("r", measured(max_memory_gb=15.0))]))
    process = _command("-m", "conformance", "diff", str(old), str(new), PYTHONIOENCODING="ascii")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and b"Traceback" not in err, err  # the gate's verdict, not a crash
    assert b"max_memory_gb 10.00 \\u2192 15.00 GB" in out
