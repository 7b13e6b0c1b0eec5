"""The command lines' contracts: bad input is one line on stderr and exit status 2; output never
ends in a traceback.

``UsageError`` is bad command-line input that a command reports itself; ``OneLineParser`` is the
``argparse`` parser of ``litgpt-min`` and ``conformance`` (light to import: no torch);
``console_output`` runs a command's ``main`` with its output rules.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from litgpt_min import deferred_signals
from litgpt_min.files import lookup_problem
from litgpt_min.quoting import clipped, quoted

# The status of a command whose reader went away (``conformance env | head -1``), as a shell reports
# a process that SIGPIPE ended.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# Ctrl-C (SIGINT): one line and the shell's status for it, not a traceback.
EXIT_INTERRUPTED = 128 + signal.SIGINT
# Errors of writing standard output that no command raises for its own files (it names those):
# a full disk or quota, a file grown past its limit, a descriptor open for reading only (`1</dev/null`).
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EBADF)


def one_line(message: str) -> str:
    """``message`` on one line: every character ``str.splitlines`` would break at, and every other
    control character (a user's path or value may hold them), written as its escape."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


def path_argument(text: str) -> Path:
    """An ``argparse`` type for a path: an empty value is refused (``Path("")`` would be the working
    directory, silently), and so is one the system cannot look up (a name too long for the file
    system), which every later check of the path would raise from: that one is shown cut short, as
    no file has its name."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty value")
    if why := lookup_problem(text):
        raise argparse.ArgumentTypeError(f"{clipped(text)}: {why}")
    return Path(text)


def plain_number(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """``int`` or ``float`` as an ``argparse`` type for a number spelled in ASCII, without ``_``:
    Python's own take ``1_000`` and full-width digits (``３``), which no one means on a command
    line. Its name is ``kind``'s, so argparse still says "invalid int value: '1_0'"."""

    def parse(text: str) -> Any:
        if not text.isascii() or "_" in text:
            raise ValueError(f"not a plain number: {text!r}")
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def number_argument(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """:func:`plain_number` as an option's type, refusing in words rather than a Python type's name:
    "not a whole number: '2.5'", as the options with a range say it (``whole_number``)."""
    parse = plain_number(kind)

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {quoted(text)}") from None

    return checked


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _GivenOnce(argparse.Action):
    """An option that refuses to be given again: argparse keeps the last value silently, so
    ``--model a ... --model b`` (a command line built from a template plus an override) would run
    ``b`` without a word. Counted per parse (``OneLineParser.parse_known_args`` resets it), so
    a switch's ``--no-`` form counts too."""

    given = 0

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        self.given += 1
        if self.given > 1 and self.option_strings:
            raise argparse.ArgumentError(self, "given twice; give it once")
        super().__call__(parser, namespace, values, option_string)


class _StoreOnce(_GivenOnce, argparse._StoreAction):
    """argparse's ``store``, given once."""


class _BooleanOnce(_GivenOnce, argparse.BooleanOptionalAction):
    """``--flag``/``--no-flag``, one of them once (``--lora-query --no-lora-query`` is refused)."""


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked for (its
    metadata costs every command's start-up otherwise)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("litgpt-conformance")
        except PackageNotFoundError:  # run from a checkout that was never installed
            installed = "not installed"
        parser._print_message(f"{parser.prog} {installed}\n", sys.stdout)  # stdout, as argparse's own
        parser.exit()


# Choices of Lit-GPT or Lightning whose closest spelling here means something else, each with the
# choice that tells it applies (among the option's choices) and what the error says instead of the
# closest spelling: Lightning's accelerator "gpu" is "cuda" (by spelling alone, "cpu"); QLoRA is
# LoRA on a 4-bit model (by spelling alone, LoRA, with the quantization lost); Lit-GPT's int8 and
# GPTQ modes are left out (by spelling alone, nf4: another format).
LEFT_OUT_QUANTIZE = ("bnb.int8-training", "bnb.int8", "gptq.int4")
LEFT_OUT_TEXT = "a mode of Lit-GPT left out here, as no table row uses it"
_MEANT = {
    "gpu": ("cuda", "did you mean 'cuda'?"),
    "qlora": ("lora", "QLoRA is 'lora' with --quantize bnb.nf4 (or bnb.nf4-dq)"),
    **{mode: ("bnb.nf4", LEFT_OUT_TEXT) for mode in LEFT_OUT_QUANTIZE},
}


# torchrun's options that no command here takes (each spelled with "-" or "_"): a node's rank, its
# processes and the rendezvous are the launcher's, which starts every process with its rank
# (README, "Several GPUs, several machines"). Given here, they are named as torchrun's, not as the
# option here they most resemble by spelling (--node-rank: --no-lora-key). --nnodes is left out:
# its closest here, --num-nodes, is the option that says the same.
LAUNCHER_OPTIONS = (
    "node-rank", "nproc-per-node", "master-addr", "master-port", "rdzv-backend", "rdzv-endpoint", "rdzv-id",
    "standalone", "max-restarts",
)  # fmt: skip


# How argparse begins the error of a required option, or a required group, not given.
_REQUIRED = ("the following arguments are required", "one of the arguments")


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` with the bad-input contract: an error is one line on stderr
    (``prog: error: message``, no usage block) and exit status 2.

    It also refuses an option of one value given twice (argparse would keep the last, silently),
    and the empty list that argparse (3.11) hands over, unconverted, for ``--opt=--``: the option's
    type never sees the value, and the code after it would fail on a list. An option is spelled
    whole (``allow_abbrev=False``, as pytest's parser): an abbreviation is unrecognized.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations, as pytest's own parser: `litgpt-min finetune ... --rank 1` was taken as
        # --rank-timeout-s 1, silently; it is an unrecognized option, with the full one as its hint.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        # An action given as a class is looked up in the registry under that class too.
        self.register("action", argparse.BooleanOptionalAction, _BooleanOnce)

    def add_version(self) -> None:
        """``--version``: the installed distribution's version (``litgpt-conformance``)."""
        self.add_argument("--version", action=_Version, help="print the version and exit")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(self.explained(message))}\n")

    def explained(self, message: str) -> str:
        """argparse's ``message``, or the words it did not take where those are the cause: it says
        a required option is missing before it says which words it did not take (`--prof cpu-tiny`
        read "one of the arguments --profile --model --config is required")."""
        if message.startswith(_REQUIRED) and (unknown := self._unknown_options()):
            return self.unrecognized_text(unknown)
        return message

    def _unknown_options(self) -> list[str]:
        """The ``--`` words of the arguments being parsed that name no option of this parser (none
        for a parser with subcommands, whose options are theirs)."""
        if any(isinstance(action, argparse._SubParsersAction) for action in self._actions):
            return []
        options = {s for action in self._actions for s in action.option_strings}
        words = getattr(self, "_parsing", [])
        words = words[: words.index("--")] if "--" in words else words
        return [w for w in words if isinstance(w, str) and w.startswith("--") and w.split("=", 1)[0] not in options]

    def unrecognized(self, words: list[str]) -> NoReturn:
        self.error(self.unrecognized_text(words))

    def unrecognized_text(self, words: list[str]) -> str:
        """The error for ``words`` this parser does not take, naming the option each misspelled
        option most resembles (``--jsn``: ``--json``), as a misspelled choice names its closest."""
        options = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        close = {}
        launcher = []
        for word in words:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag[2:].replace("_", "-") in LAUNCHER_OPTIONS:
                launcher.append(flag)
            elif flag.startswith("--") and flag not in options:
                # The one option it abbreviates (--rank: --rank-timeout-s), else the closest spelling.
                whole = [o[2:] for o in options if o.startswith(flag)]
                near = whole if len(whole) == 1 else difflib.get_close_matches(flag[2:], [o[2:] for o in options], n=1)
                if near:
                    close[word] = f"--{near[0]}"
        hint = ""
        if len(close) == 1 and sum(word.startswith("-") for word in words) == 1:  # (and its value: "--toleranse 0.1")
            hint = f"; did you mean {next(iter(close.values()))}?"
        elif close:
            hint = f"; did you mean {', '.join(f'{option} for {clipped(word)}' for word, option in close.items())}?"
        for flag in launcher:
            hint += f"; {flag} is torchrun's option, not {self.prog}'s (torchrun starts each process with its rank)"
        return f"unrecognized arguments: {' '.join(map(clipped, words))}{hint}"

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.unrecognized(extras)
        return namespace

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's, naming the closest choice (a subcommand, a --quantize mode) of a misspelled one
        choices = action.choices
        if choices is None or value in choices:
            return
        near = difflib.get_close_matches(value, [str(c) for c in choices], n=1) if isinstance(value, str) else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        if isinstance(value, str) and value.lower() in _MEANT and _MEANT[value.lower()][0] in choices:
            hint = f"; {_MEANT[value.lower()][1]}"
        listed = ", ".join(map(repr, choices))
        raise argparse.ArgumentError(action, f"invalid choice: {quoted(value)}{hint} (choose from {listed})")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # argparse's, with the value cut short in its "invalid int value: '...'" (a value may be a
        # megabyte); a type's own message (ArgumentTypeError) is the type's to cut.
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as exc:
            if not isinstance(exc.__context__, (TypeError, ValueError)):
                raise
            name = getattr(action.type, "__name__", repr(action.type))
            raise argparse.ArgumentError(action, f"invalid {name} value: {quoted(arg_string)}") from None

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse drops an OSError of writing ``--help`` (a full disk), which then exits 0 with
        # nothing written; here it reaches ``console_output``'s rules like any other output's.
        if message:
            (file or sys.stderr).write(message)

    def subcommand(self, name: str) -> OneLineParser:
        """The parser of subcommand ``name``, whose error names it (``prog name: error: ...``)."""
        action = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._parsing = list(sys.argv[1:] if args is None else args)  # for error()
        for action in self._actions:
            if isinstance(action, _GivenOnce):
                action.given = 0
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if isinstance(action, argparse._StoreAction) and action.nargs is None and isinstance(value, list):
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: expected one value")
        return namespace, extras


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C held back until the block ends, then raised there. For the imports of torch: raised
    inside a C extension's initialization (numpy's, which torch imports), a KeyboardInterrupt can
    be cleared by the extension's own error handling, so that the command runs on as if never
    interrupted, or leave the module half-initialized for a RecursionError traceback later.

    Blocking the signals holds back those sent to the main thread; one that the kernel gives
    another thread (started before the block: a Timer, a library's worker) still runs its Python
    handler on the main thread, at its next bytecode. So the Python handlers queue them too
    (``deferred_signals``), and the block's end hands them on."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    # SIGTERM too: at its default it ends the process when unblocked; a handler (the plugin's, which
    # makes it an interrupt) raises like Ctrl-C's.
    began = deferred_signals.hold()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:  # a signal that came meanwhile is queued as the mask lifts, and its handler raises it here
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        if began:
            deferred_signals.release()


# What a SIGTERM taken as an interrupt says (its KeyboardInterrupt's message).
TERMINATED = "terminated (SIGTERM)"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt(TERMINATED)`` in the block, as Ctrl-C does,
    where it would end the process without a word; its handler is put back after. Only a SIGTERM
    at its default, on the main thread, is taken."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(TERMINATED)

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def console_output(command: Callable[[], int], prog: str) -> int:
    """Run a console command's ``main`` with the rules every command follows at its edges:

    - text the terminal's encoding cannot hold is escaped (``PYTHONIOENCODING=ascii``), never a
      ``UnicodeEncodeError``;
    - a reader that closed the pipe early (``| head -1``) ends the command quietly with
      ``EXIT_BROKEN_PIPE``; output that cannot be written (a full disk) is one line on stderr and
      exit status 2; a closed standard output or error is written to nowhere, and the exit
      status still says how the command ended;
    - Ctrl-C is one line (``prog: interrupted``) and the shell's status for it, 130.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:  # the descriptor was closed (`>&-`)
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        elif isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    stdout, stderr = sys.stdout, sys.stderr
    if isinstance(stdout, io.TextIOWrapper):
        sys.stdout = Output(stdout)
    if isinstance(stderr, io.TextIOWrapper):
        sys.stderr = Diagnostics(stderr)
    try:
        return _run_command(command, prog)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _run_command(command: Callable[[], int], prog: str) -> int:
    try:
        try:
            code = command()
        except SystemExit:  # argparse's --help and errors: their output is flushed here too
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit, where a closed pipe could only be reported
        return code
    except BrokenPipeError:
        _silence()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if not isinstance(exc, OutputError) and exc.errno not in _OUTPUT_ERRNOS:
            raise
        _silence()
        print(one_line(f"{prog}: cannot write its output: {exc.strerror or exc}"), file=sys.stderr)
        return 2


class OutputError(OSError):
    """Standard output cannot be written (a full disk: ``_OUTPUT_ERRNOS``): the command's to end
    with its one line, never a run's failure (which would say it a second time)."""


class Output:
    """Standard output as the commands use it: a write error of ``_OUTPUT_ERRNOS`` is an
    ``OutputError``, which a run lets through (like ``BrokenPipeError``)."""

    def __init__(self, stream: io.TextIOWrapper) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _as_output_error(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _as_output_error(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _as_output_error(exc: OSError) -> OSError:
    if isinstance(exc, BrokenPipeError) or exc.errno not in _OUTPUT_ERRNOS:
        return exc
    return OutputError(exc.errno, exc.strerror)


class Diagnostics:
    """Standard error as the commands use it: progress and messages that never fail the command.
    What cannot be written (``2>/dev/full``, a reader of stderr alone that went away) is dropped;
    the exit status and the result on standard output (``--json``) still say how the command
    ended. A reader that went away from a pipe stdout shares (``2>&1 | head -1``) still ends the
    command (``BrokenPipeError``), as it does on stdout."""

    def __init__(self, stream: io.TextIOWrapper) -> None:
        self._stream = stream
        self._shares_stdout = _same_file(stream, sys.stdout)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
        except OSError:
            pass
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()
        except OSError:
            pass

    def _gone(self) -> None:
        """Standard error's reader went away: the command ends if stdout's went with it, else
        stderr writes to /dev/null from now on (the interpreter's last flush too)."""
        if self._shares_stdout:
            raise BrokenPipeError(errno.EPIPE, "standard error's and output's reader went away")
        _silence(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _same_file(one: Any, other: Any) -> bool:
    """Whether two streams write to one file (``2>&1``: one pipe)."""
    try:
        a, b = os.fstat(one.fileno()), os.fstat(other.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _silence(stream: Any = None) -> None:
    """Point ``stream`` (standard output by default) at /dev/null: the interpreter's last flush
    then writes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor to replace
        pass
