"""Several devices: Lightning Fabric's FSDP strategy as the reference's scripts configured it, this
process's rank, and the per-rank peaks gathered into one result.

Lit-GPT at 8641822 ran every finetune script with ``devices > 1`` under

    FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block},
                 state_dict_type="full", limit_all_gathers=True, cpu_offload=False)

and Lightning's defaults otherwise (FULL_SHARD, ``use_orig_params=True``). :func:`fsdp_strategy`
builds exactly that. Lightning 2.6 refuses FSDP on the CPU accelerator ("FSDP is only available on
GPU"), although PyTorch's FSDP runs there over gloo; :class:`AnyDeviceFSDPStrategy` is the same
strategy class with that refusal lifted (the connector refuses the exact ``FSDPStrategy`` type
only), so the CPU tests drive the very wrapping, checkpointing and gradient sharding a GPU run
does, with nccl replaced by gloo.

Who launches the ranks and which one this process is: ``litgpt_min/launch.py``. This module
imports Lightning (seconds), so ``run.py`` imports it only for a several-device run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from litgpt_min.measure import gb
from litgpt_min.model import Block

try:  # the same package as the Fabric that run.make_fabric builds
    from lightning_fabric.strategies import FSDPStrategy
    from lightning_fabric.strategies.fsdp import _setup_activation_checkpointing
except ImportError:
    from lightning.fabric.strategies import FSDPStrategy
    from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing

if TYPE_CHECKING:
    from lightning.fabric import Fabric


class AnyDeviceFSDPStrategy(FSDPStrategy):
    """Fabric's ``FSDPStrategy``, allowed on the CPU accelerator (process group: gloo)."""

    def _get_process_group_backend(self) -> str:
        if self._process_group_backend is not None:
            return self._process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.root_device.type != "cpu":
            return super().setup_module(module)
        # Lightning passes ``device_id=root_device.index``, None on the CPU, and PyTorch's FSDP then
        # looks for an accelerator; the CPU device itself is what it needs. The rest is the parent's.
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(
            module=module,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self._fsdp_kwargs,
        )
        _setup_activation_checkpointing(wrapped, self._activation_checkpointing_kwargs)
        return wrapped


def fsdp_strategy(timeout_s: float) -> AnyDeviceFSDPStrategy:
    """The reference's multi-device strategy. ``timeout_s``: how long a collective (and the
    start-up rendezvous) waits for a rank before it fails, so that a hung rank ends the run."""
    return AnyDeviceFSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block},
        state_dict_type="full",
        limit_all_gathers=True,
        cpu_offload=False,
        timeout=timedelta(seconds=timeout_s),
    )


def gather_peaks(fabric: Fabric, peak_bytes: int) -> list[float]:
    """Every rank's peak (decimal GB, by global rank); a collective, so every rank calls it."""
    peaks: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(peaks, peak_bytes)
    return [round(gb(p), 6) for p in peaks]


def leave_process_group() -> None:
    """End this rank's part in the process group once its last collective is done: every rank
    meets at a barrier, then destroys the group. A rank that exits with the group alive leaves its
    gloo threads to the interpreter's exit, which can abort the process ("terminate called without
    an active exception", SIGABRT) and with it the torchrun agent's run, after a good result."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


__all__ = ["AnyDeviceFSDPStrategy", "fsdp_strategy", "gather_peaks", "leave_process_group"]
