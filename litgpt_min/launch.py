"""Starting the ranks of a several-device run on this machine, and turning them into one result.

``litgpt-min finetune ... --devices N`` outside torchrun and SLURM starts N rank processes itself
(forked on the CPU, where the parent holds no accelerator state, each rank computing on one
thread; spawned on CUDA, where a fork cannot start a fresh CUDA context), each with the environment torchrun would give it, and waits for
their results over pipes. The run never hangs on a rank:

- a rank that dies without a result is an ``error`` naming it and its exit status;
- once a rank has failed, the others get a few seconds to report, then are killed (they would
  otherwise wait in a collective for the process-group timeout);
- once a rank has finished, the others get ``rank_timeout_s`` to finish too; a collective that
  waits longer than that for a rank fails on its own (the process group's timeout).

Every rank asks the kernel to kill it when the launcher dies (``PR_SET_PDEATHSIG``), so a row
killed at its timeout takes its ranks with it.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from litgpt_min.config import LONG_LONG_MAX
from litgpt_min.outcome import classify_exception
from litgpt_min.quoting import clipped, quoted
from litgpt_min.result import Outcome, Result
from litgpt_min.usage import EXIT_BROKEN_PIPE, OutputError

# A rank's exit status when its standard output could not be written (sysexits' EX_IOERR).
EXIT_OUTPUT_UNWRITABLE = 74

if TYPE_CHECKING:
    from litgpt_min.options import RunRequest

RankRun = Callable[[], Result]
"""One rank's whole run (``run.execute_rank`` bound to the request); picklable for spawned ranks."""

# Seconds the other ranks get to report once one has failed (their own error is then secondary).
FAILURE_GRACE_S = 5.0
_POLL_S = 0.2
# How long a rank whose pipe closed without a result may take to exit before it is killed.
_EXIT_WAIT_S = 5.0


def launch_local(request: RunRequest, run_rank: RankRun) -> Result:
    """Run ``request`` on ``request.devices`` local ranks, each calling ``run_rank`` with torchrun's
    environment, and merge their results (see the module doc)."""
    if request.num_nodes > 1:
        raise ValueError(
            f"--num-nodes {request.num_nodes}: start litgpt-min on every machine with torchrun or srun "
            "(the README's 'Several GPUs, several machines' has the commands); it launches one machine only"
        )
    if request.device().type == "cuda" and request.devices > torch.cuda.device_count():
        # Each rank would start, then fail in Lightning's own check of the devices.
        count = torch.cuda.device_count()
        raise ValueError(
            f"--devices {request.devices}: this machine has {count} CUDA device{'s' if count != 1 else ''}"
            " (torch.cuda.device_count(), after CUDA_VISIBLE_DEVICES)"
        )
    method = "fork" if request.device().type == "cpu" else "spawn"
    if method == "fork":
        import litgpt_min.fsdp  # noqa: F401  (Lightning: imported once here, not once per rank)
    context = multiprocessing.get_context(method)
    port = free_port()
    ranks: dict[int, tuple[multiprocessing.process.BaseProcess, Connection]] = {}
    try:  # the ranks started so far are stopped below, whatever ends this (Ctrl-C while starting them too)
        for rank in range(request.devices):
            receive, send = context.Pipe(duplex=False)
            env = rank_env(rank, request.devices, port)
            name = f"litgpt-min-rank{rank}"
            process = context.Process(target=_rank_main, args=(request, run_rank, env, send), name=name)
            ranks[rank] = (process, receive)  # before it starts: a Ctrl-C in start() leaves no rank behind
            process.start()
            send.close()  # the child holds the sending end; EOF here means it is gone
        results = supervise(ranks, request.rank_timeout_s, lambda message: failed(request, message))
    finally:
        for process, _ in ranks.values():
            if process.pid is None:
                continue  # never started
            if process.is_alive():
                process.kill()
            process.join()
    if ranks[0][0].exitcode == EXIT_BROKEN_PIPE:
        # Rank 0's output (the progress, the result) has no reader: the others' failures follow
        # from its exit, and the command ends as one run would, quietly (exit status 141).
        raise BrokenPipeError("rank 0's standard output was closed")
    if ranks[0][0].exitcode == EXIT_OUTPUT_UNWRITABLE:
        raise OutputError(errno.EIO, "rank 0 could not write its standard output")
    return merge(results)


# What a launcher gives each of its ranks: torchrun (torch.distributed.elastic), SLURM's tasks (an
# sbatch script's batch step has them too, with SLURM_NTASKS > 1), and what ``rank_env`` sets. A
# process that starts runs of its own leaves them out of those runs' environment
# (``without_launcher``), so that a run started there launches its own ranks, as it would anywhere.
LAUNCHER_VARIABLES = frozenset(
    {
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "GROUP_WORLD_SIZE",
        "ROLE_NAME", "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_ERROR_FILE",
        "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_PROCID",
        "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_TASKS_PER_NODE", "SLURM_GTIDS",
    }
)  # fmt: skip


def without_launcher(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less the ``LAUNCHER_VARIABLES``: the environment of a run this process starts."""
    return {name: value for name, value in environ.items() if name not in LAUNCHER_VARIABLES}


def torchrun_ranks() -> str | None:
    """``"rank 1 of 8"`` when this process is one of several ranks torchrun started, else None.
    (SLURM's tasks are not told apart here: an sbatch script's batch step carries them too.)"""
    world = os.environ.get("WORLD_SIZE") or "1"
    # (below 2 read from its digits: int() refuses more than 4,300 of them, naming no variable)
    if "TORCHELASTIC_RUN_ID" not in os.environ or not world.isdigit() or world.lstrip("0") in ("", "1"):
        return None
    return f"rank {clipped(os.environ.get('RANK', '?'))} of {clipped(world)}"


def exit_process(code: int) -> NoReturn:
    """End the ``litgpt-min`` process with ``code``. One rank of torchrun or srun leaves without the
    interpreter's teardown (``os._exit``, after its output is flushed): there a C++ thread of
    torch.distributed that outlives the destroyed process group can abort the process ("terminate
    called without an active exception", SIGABRT), and the launcher then fails the whole run after
    a good result."""
    try:
        launched = externally_launched()
    except ValueError:  # refused as bad input already (check_environment)
        launched = False
    if launched:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def externally_launched() -> bool:
    """Whether this process is one rank started by a launcher (ours, torchrun, or SLURM's srun)."""
    if "LOCAL_RANK" in os.environ:  # torchrun, and launch_local's ranks
        return True
    # Lightning's SLURMEnvironment.detect(), less an interactive shell's allocation.
    return (_count("SLURM_NTASKS") or 1) > 1 and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def local_rank() -> int:
    return _first_count("LOCAL_RANK", "SLURM_LOCALID")


def global_rank() -> int:
    return _first_count("RANK", "SLURM_PROCID")


def _first_count(*names: str) -> int:
    """The first of ``names`` that is set (torchrun's before SLURM's: a torchrun inside a SLURM
    job numbers its ranks its own way, and its rank 0 may be any SLURM task); 0 when none is."""
    return next((value for name in names if (value := _count(name)) is not None), 0)


def check_environment(world_size: int, devices: int) -> None:
    """A ``ValueError`` when the launcher's variables cannot describe this run of ``world_size``
    ranks (``--devices`` x ``--num-nodes``), ``devices`` of them on each machine: one that is not a
    whole number, or, under a launcher, a world of another size, a rank outside it, a local rank
    outside this machine's devices, a several-rank world without its size or this rank's number,
    or a ``MASTER_PORT`` that is no port. Such a rank would otherwise fail in a traceback or wait at
    the rendezvous for ranks that never come."""
    for name in _COUNTED:
        _count(name)
    if not externally_launched():
        return
    torchrun = "LOCAL_RANK" in os.environ
    if torchrun:
        world, world_name, rank_name, local_name = _count("WORLD_SIZE"), "WORLD_SIZE", "RANK", "LOCAL_RANK"
    else:
        world, world_name, rank_name, local_name = (
            _count("SLURM_NTASKS"),
            "SLURM_NTASKS",
            "SLURM_PROCID",
            "SLURM_LOCALID",
        )
    if world is not None and world != world_size:
        raise ValueError(
            f"the launcher's {world_name}={world} is not this run's ranks: --devices x --num-nodes = {world_size}"
        )
    if world is not None and global_rank() >= world:
        raise ValueError(f"the launcher's {rank_name}={global_rank()} is not below its {world_name}={world}")
    if local_rank() >= devices:
        raise ValueError(f"the launcher's {local_name}={local_rank()} is not below --devices {devices}")
    if global_rank() >= world_size:  # with its world size unset: a rank that would print no result
        raise ValueError(
            f"the launcher's {rank_name}={global_rank()} is not below this run's ranks:"
            f" --devices x --num-nodes = {world_size}"
        )
    if world_size == 1:
        return  # one rank: no rendezvous to reach
    # What Lightning's environment reads of each launcher's variables (SLURM's node and local rank too).
    needed = (world_name, rank_name) if torchrun else (world_name, rank_name, "SLURM_LOCALID", "SLURM_NODEID")
    missing = [name for name in needed if _count(name) is None]
    if missing:
        raise ValueError(
            f"the launcher's {'LOCAL_RANK' if torchrun else 'SLURM_NTASKS'} is set but not its"
            f" {' and '.join(missing)}: a run of {world_size} ranks needs "
            + (
                "both (torchrun sets them; outside a launcher leave LOCAL_RANK unset)"
                if torchrun
                else ("it (srun sets it)" if len(missing) == 1 else "them (srun sets them)")
            )
        )
    nodes = world_size // devices
    if torchrun and not os.environ.get("TORCHELASTIC_RUN_ID"):
        _check_lightning_numbering(nodes, devices)
    if not torchrun and (node := _count("SLURM_NODEID") or 0) >= nodes:
        raise ValueError(f"the launcher's SLURM_NODEID={node} is not below --num-nodes {nodes}")
    if not torchrun and _count("SLURM_NTASKS_PER_NODE") != devices:
        # Lightning's SLURM environment needs it, equal to --devices (srun --ntasks-per-node).
        given = os.environ.get("SLURM_NTASKS_PER_NODE")
        what = " is unset" if given is None else f"={quoted(given)} is not --devices {devices}"
        raise ValueError(
            f"the launcher's SLURM_NTASKS_PER_NODE{what} (start the ranks with srun --ntasks-per-node={devices})"
        )
    port = os.environ.get("MASTER_PORT")
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise ValueError(f"the launcher's MASTER_PORT={quoted(port)} is not a port number (1-65535)")


def _check_lightning_numbering(nodes: int, devices: int) -> None:
    """Ranks set up by hand, or by a launcher other than torchrun (no ``TORCHELASTIC_RUN_ID``): here
    Lightning numbers a rank ``NODE_RANK`` (or ``GROUP_RANK``, else 0) x ``--devices`` +
    ``LOCAL_RANK`` and ignores ``RANK``, and without ``MASTER_PORT`` each machine picks a port of its
    own. A ``RANK`` that disagrees, a node outside ``--num-nodes``, or several machines without
    ``MASTER_ADDR`` and ``MASTER_PORT`` would wait at the rendezvous for ranks that never come."""
    name = next((n for n in ("NODE_RANK", "GROUP_RANK") if os.environ.get(n)), None)
    node = 0 if name is None else _count(name)
    assert node is not None
    if node >= nodes:
        raise ValueError(f"the launcher's {name}={node} is not below --num-nodes {nodes}")
    rank, numbered = _count("RANK"), node * devices + local_rank()
    if rank is not None and rank != numbered:
        raise ValueError(
            f"the launcher's RANK={rank} is not {name or 'NODE_RANK'} x --devices + LOCAL_RANK = {numbered}, the"
            " rank Lightning gives this process without torchrun (no TORCHELASTIC_RUN_ID): set NODE_RANK on each"
            " machine, or start the ranks with torchrun"
        )
    unset = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
    if nodes > 1 and unset:
        raise ValueError(
            f"the launcher's {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} unset: the ranks of"
            f" {nodes} machines meet at MASTER_ADDR:MASTER_PORT, the same on each (torchrun sets them)"
        )


# The launcher variables read as whole numbers.
_COUNTED = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
)  # fmt: skip


def _count(name: str) -> int | None:
    """A launcher variable's whole number, None when it is unset (a ``ValueError`` for anything
    else, an empty value too: Lightning reads a set one with ``int()``, at import for a rank)."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"the launcher's {name}={quoted(value)} is not a whole number >= 0")
    # (its length first: int() refuses more than 4,300 digits, naming no variable)
    if len(value.lstrip("0")) > len(str(LONG_LONG_MAX)) or int(value) > LONG_LONG_MAX:
        raise ValueError(f"the launcher's {name}={clipped(value)} is more than a C long long holds ({LONG_LONG_MAX})")
    return int(value)


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:<local rank>`` among the visible GPUs (the CPU stays the CPU)."""
    return torch.device("cuda", local_rank()) if device.type == "cuda" else device


def rank_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What torchrun would set for ``rank`` of a one-machine run."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "NODE_RANK": "0",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Outcomes = dict[int, tuple[Result, str | None]]  # rank -> (its result, why it was stopped if it was)


def supervise(
    ranks: Mapping[int, tuple[multiprocessing.process.BaseProcess, Connection]],
    rank_timeout_s: float,
    failure: Callable[[str], Result],
    clock: Callable[[], float] = time.monotonic,
) -> Outcomes:
    """Wait for every rank's result; stop the ones that keep the run from ending (module doc)."""
    results: Outcomes = {}
    first_done: float | None = None
    first_failed: float | None = None
    while len(results) < len(ranks):
        pending = {rank: ranks[rank] for rank in ranks if rank not in results}
        wait([conn for _, conn in pending.values()], timeout=_POLL_S)
        for rank, (process, conn) in pending.items():
            received, closed = _receive(conn)
            if received is None and (closed or not process.is_alive()):
                # Its end of the pipe closed: it is exiting, or was killed and is not yet reaped
                # (taken for alive, a killed rank 0 lost its place to the peer whose collective it broke).
                process.join(timeout=_EXIT_WAIT_S)
                if process.is_alive():
                    process.kill()
                    process.join()
                received = failure(f"exited with status {_status(process.exitcode)} without a result")
            if received is None:
                continue
            results[rank] = (received, None)
            now = clock()
            first_done = now if first_done is None else first_done
            if received.outcome != "ok" and first_failed is None:
                first_failed = now
        now = clock()
        for rank, (process, _) in ranks.items():
            if rank in results:
                continue
            if first_failed is not None and now - first_failed > FAILURE_GRACE_S:
                why = f"killed {FAILURE_GRACE_S:g} s after another rank failed"
            elif first_done is not None and now - first_done > rank_timeout_s:
                why = f"no result {rank_timeout_s:g} s after another rank finished (hung?)"
            else:
                continue
            process.kill()
            process.join()
            results[rank] = (failure(why), why)
    return results


def merge(results: Outcomes) -> Result:
    """One result for the run: rank 0's (which carries every rank's peak), unless a rank failed.
    Then the first failure to arrive decides the outcome (the others' usually follow from it: a
    peer that vanished, a collective that timed out), and the message names its rank (and the
    ranks that failed alike), then the other ranks' fates. ``results`` is in order of arrival."""
    arrived = [(rank, r) for rank, (r, killed) in results.items() if r.outcome != "ok" and killed is None]
    failures = arrived or [(rank, r) for rank, (r, _) in results.items() if r.outcome != "ok"]
    base = results[0][0]
    if not failures:
        return base
    rank, failed = failures[0]
    # The ranks that failed alike are named together (every rank's pre-flight refuses the same run).
    alike = [k for k, (r, _) in sorted(results.items()) if r.outcome != "ok" and r.error == failed.error]
    named = (
        "every rank"
        if len(alike) == len(results)
        else "rank" + ("s " if len(alike) > 1 else " ") + ", ".join(map(str, alike))
    )
    others = [f"rank {k}: {r.error}" for k, (r, _) in sorted(results.items()) if k not in alike and r.outcome != "ok"]
    message = f"{named}: {failed.error}" + ("" if not others else " (" + "; ".join(others) + ")")
    peaks = [r.max_memory_gb for r, _ in results.values() if r.max_memory_gb is not None]
    return base.replace(
        outcome=failed.outcome,
        error=message,
        max_memory_gb=max(peaks) if peaks else None,
        details={**base.details, "failed_rank": rank},
    )


def _rank_main(request: RunRequest, run_rank: RankRun, env: dict[str, str], send: Connection) -> None:
    """One rank: torchrun's environment, the measured run, its result sent to the launcher."""
    die_with_parent()
    os.environ.update(env)
    if request.device().type == "cpu":
        # A forked rank (launch_local forks on the CPU): GNU OpenMP's thread pool does not survive a
        # fork (the child's first parallel region waits forever for the parent's threads), so this
        # rank computes on one thread, which keeps torch out of OpenMP altogether.
        torch.set_num_threads(1)
    try:
        result = run_rank()
    except BrokenPipeError:  # its output's reader went away (`| head -1`): the launcher ends quietly
        send.close()
        os._exit(EXIT_BROKEN_PIPE)
    except OutputError:  # its output cannot be written (a full disk): the launcher says so, once
        send.close()
        os._exit(EXIT_OUTPUT_UNWRITABLE)
    except BaseException as exc:  # execute_rank turns run failures into results; this is the rest
        result = failed(request, *reversed(classify_exception(exc)))
    try:
        send.send(result.to_json())
    finally:
        send.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _libc_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (None: not Linux, or no libc), looked up when this module is imported, so that
    a process between fork and exec calls it without loading a library."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None


_PRCTL = _libc_prctl()


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere a no-op). ``parent``,
    the parent's pid read before this process was started, closes the gap before the request: a
    parent that is gone already ends this process now (it was reparented)."""
    if _PRCTL is None:
        return
    _PRCTL(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _receive(conn: Connection) -> tuple[Result | None, bool]:
    """A rank's result if it sent one, and whether its end of the pipe closed without one."""
    try:
        if not conn.poll():
            return None, False
        data: Any = conn.recv()
    except (EOFError, OSError):
        return None, True
    return Result.from_json(data, "a rank's result"), False


def failed(request: RunRequest, message: str, outcome: Outcome = "error") -> Result:
    """A result for a rank that produced none, with the run's identity."""
    return Result.failed(outcome, message, **request.identity())


def _status(code: int | None) -> str:
    if code is not None and code < 0 and -code in signal.valid_signals():
        return signal.Signals(-code).name
    return str(code)


__all__ = [
    "FAILURE_GRACE_S",
    "LAUNCHER_VARIABLES",
    "check_environment",
    "die_with_parent",
    "externally_launched",
    "failed",
    "free_port",
    "global_rank",
    "launch_local",
    "local_rank",
    "merge",
    "rank_device",
    "rank_env",
    "supervise",
    "torchrun_ranks",
    "without_launcher",
]
