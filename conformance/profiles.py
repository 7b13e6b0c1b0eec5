"""Which profiles a session checks, and how each is checked on this machine.

Selection (``resolve_profiles``): the ``--profile`` names, else the machine's defaults. Activation
(``activate``): native, portable (another card's profile, under its memory), the CPU profile, or
parameter counts only (no GPU), with the memory cap passed to the runner and the reasons why
measured rows or speed checks skip here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conformance import hardware
from conformance.display import cap_figure, cap_text, display, rows_text, suite_command
from conformance.expectations import SCHEMA_PATH, ExpectationError, Profile, list_profiles, load_profile, recorded_cap
from conformance.options import Options

# The published tables' card: compared in portable mode when no profile matches this machine's
# GPU, and its parameter counts are checked on machines without a GPU.
REFERENCE_PROFILE = "a100-sxm4-40gb"
NO_GPU_REASON = "needs a CUDA GPU (none found: torch.cuda.is_available() is False)"


@dataclass(frozen=True)
class ActiveProfile:
    """A profile selected for this session, and how its rows are checked on this machine."""

    profile: Profile
    mode: Literal["native", "portable", "cpu", "params-only"]
    gpus: int  # devices this profile's rows may use here (the CPU profile: 1, the CPU itself)
    memory_cap_gb: float | None  # passed to the runner as --memory-cap-gb
    measure_skip: str | None  # why measured rows skip here (None: they run)
    speed_skip: str | None  # why speed checks skip here (None: compared)
    record_target: Path  # the folder whose --record refreshes these figures for this machine
    card_memory_gb: float | None = None  # portable mode: this machine's card (decimal GB)
    speed_note: str | None = None  # speeds compared here though timed on another machine: which, and how

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def on_cpu(self) -> bool:
        return self.mode == "cpu"

    def describe(self) -> str:
        """One header line."""
        p = self.profile
        head = f"conformance profile {p.name} ({display(p.directory)}, {rows_text(len(p.cases))}): "
        cap = f" under {cap_text(self.memory_cap_gb)}" if self.memory_cap_gb is not None else ""
        if self.mode == "params-only":
            # What this machine checks, and where the rest gets a verdict: a CPU user learns which card.
            refused = sum(1 for c in p.cases if c.outcome == "unsupported")
            refusals = f" and the runner's refusal of its {rows_text(refused, 'N/A row')}" if refused else ""
            card = p.hardware.get("gpu") or _sku(p)
            return head + (
                f"parameter counts, GPU-free memory estimates{refusals}; measured rows skip: {self.measure_skip};"
                f" on a GPU they run: on the profile's card ({card}) against every figure, on another all but speed"
            )
        # Rows that ran and have no speed figure (recorded where the machine was busy): no speed check.
        untimed = sum(
            1 for c in p.cases if c.outcome == "ok" and c.time_1k_iters_min is None and c.tokens_per_sec is None
        )
        unchecked = f"; {rows_text(untimed, 'ok row')} without a speed figure (speed not checked)" if untimed else ""
        if self.mode == "cpu":
            note = f"; {self.speed_note}" if self.speed_note else ""
            return head + f"measured on the CPU{cap} (memory from the live-tensor tracker){unchecked}{note}"
        if self.mode == "native":
            return head + f"measured on this card{cap}{unchecked}"
        return head + (
            f"portable comparison (parameters, peak memory, outcome){cap}; speed not compared."
            f" Record this card's profile: {suite_command()} --record {display(self.record_target)}"
        )


def load_profiles(names: list[str], root: Path) -> list[Profile]:
    """Every profile of ``names``; ``ExpectationError`` naming every one that cannot be used, as
    ``conformance validate`` does, not the first alone."""
    profiles: list[Profile] = []
    broken: dict[str, ExpectationError] = {}
    for name in names:
        try:
            profiles.append(load_profile(name, root))
        except ExpectationError as exc:
            if exc.file == SCHEMA_PATH:
                raise  # every profile is checked against it: one line says it
            broken[name] = exc
    if len(broken) == 1:
        raise next(iter(broken.values()))
    if broken:
        problems = [problem for exc in broken.values() for problem in exc.problems]
        raise ExpectationError(root, f"{len(broken)} profiles are invalid: {', '.join(broken)}", others=problems)
    return profiles


def resolve_profiles(options: Options, fp: Mapping[str, Any], recording: bool = False) -> list[ActiveProfile]:
    """The profiles this session checks: ``--profile`` names, else the machine's defaults.

    Defaults: on a GPU, the profiles recorded for its SKU, else the reference (A100) profile in
    portable mode; without a GPU, the reference profile (parameter counts) plus every CPU profile.
    """
    root = options.expectations
    if options.profiles:
        profiles = load_profiles(options.profiles, root)
    else:
        loaded = load_profiles(list_profiles(root), root)
        profiles = default_profiles(loaded, fp)
        if not profiles:
            detected = hardware.detected_sku(dict(fp))
            listing = ", ".join(p.name for p in loaded) or "none"
            raise ExpectationError(
                root,
                f"no profile for this machine (sku {detected}) and no {REFERENCE_PROFILE} profile to compare"
                f" against (available: {listing}); pick one with --profile",
            )
    return [activate(p, options, fp, recording) for p in profiles]


def default_profiles(loaded: list[Profile], fp: Mapping[str, Any]) -> list[Profile]:
    """The profiles of ``loaded`` a session without ``--profile`` checks on the machine ``fp``."""
    detected = hardware.detected_sku(dict(fp))
    reference = [p for p in loaded if p.name == REFERENCE_PROFILE]
    if detected == "cpu":
        return reference + [p for p in loaded if _sku(p) == "cpu" and p.name != REFERENCE_PROFILE]
    return [p for p in loaded if _sku(p) == detected] or reference


def activate(profile: Profile, options: Options, fp: Mapping[str, Any], recording: bool = False) -> ActiveProfile:
    """How ``profile`` is checked on the machine ``fp``."""
    emulate = options.emulate_memory_gb
    explicit_cap: float | None = None if emulate in ("auto", "off") else float(emulate)
    capacity = float(profile.hardware["memory_gb"])
    # A card's nominal size is not what its allocator can use: a profile may say what is usable.
    usable = float(profile.hardware.get("usable_memory_gb") or capacity)
    if _sku(profile) == "cpu":
        # The CPU profile always emulates its small device: that is what makes its OOM row OOM.
        cap = (
            None if emulate == "off" else (explicit_cap if explicit_cap is not None else recorded_cap(profile.hardware))
        )
        return ActiveProfile(
            profile,
            "cpu",
            1,
            cap,
            None,
            None,
            profile.directory,
            speed_note=None if recording else _cpu_speed_note(profile, fp),
        )
    gpus = list(fp.get("gpus") or [])
    if not gpus:
        return ActiveProfile(profile, "params-only", 0, None, NO_GPU_REASON, NO_GPU_REASON, profile.directory)
    detected = hardware.detected_sku(dict(fp))
    native = _sku(profile) == detected
    if emulate == "off":
        cap = None
    elif explicit_cap is not None:
        cap = explicit_cap
    elif native:
        cap = recorded_cap(profile.hardware)  # one memory per profile: the one it was recorded under
    elif recording:
        cap = None  # another card's profile, recorded for this card as it is
    else:
        cap = usable if float(gpus[0].get("memory_gb") or 0) > usable else None
    if native:
        return ActiveProfile(profile, "native", len(gpus), cap, None, None, profile.directory)
    target = options.expectations / detected
    card = gpus[0].get("name") or detected
    speed_skip = (
        f"speed figures of profile {profile.name} belong to {profile.hardware.get('gpu') or _sku(profile)},"
        f" this card is {card}: record this card's profile with"
        f" `{suite_command()} --record {display(target)}`"
    )
    card = float(gpus[0].get("memory_gb") or 0) or None
    return ActiveProfile(profile, "portable", len(gpus), cap, None, speed_skip, target, card)


def display_cap(value: float | str) -> str:
    """An ``--emulate-memory-gb`` value as it was given (``20``, not ``20.0``)."""
    return value if isinstance(value, str) else cap_figure(value)


def _sku(profile: Profile) -> str:
    return str(profile.hardware.get("sku"))


def select_profiles(options: Options, fp: Mapping[str, Any]) -> list[ActiveProfile]:
    """The session's active profiles; ``ExpectationError`` when they cannot be checked as asked
    (``--record`` writes exactly one profile, of rows measured here)."""
    recording = options.record is not None
    actives = resolve_profiles(options, fp, recording)
    if recording and len(actives) != 1:
        names = ", ".join(a.name for a in actives)
        raise ExpectationError(
            options.record or ".",
            f"--record writes one profile, but {len(actives)} are active ({names}); pick one with --profile",
        )
    if recording and actives[0].on_cpu and actives[0].memory_cap_gb is None:
        raise ExpectationError(
            options.record or ".",
            f"--record with --emulate-memory-gb off: a CPU profile's rows are measured under its memory"
            f" (profile {actives[0].name}: {float(actives[0].profile.hardware['memory_gb']):g} GB), which the"
            " recorded profile states; give that, or another figure, as --emulate-memory-gb",
        )
    if not recording and options.emulate_memory_gb != "auto":
        for active in actives:
            recorded = recorded_cap(active.profile.hardware)
            if active.mode in ("native", "cpu") and active.memory_cap_gb != recorded:
                # Its OOM rows would "fit now", its figures be judged under another memory.
                raise ExpectationError(
                    active.profile.directory,
                    f"--emulate-memory-gb {display_cap(options.emulate_memory_gb)}: profile {active.name} was recorded"
                    f" under {cap_text(recorded)} and is checked under it on this machine; leave"
                    " --emulate-memory-gb out"
                    + (
                        ""
                        if active.memory_cap_gb is None and active.on_cpu
                        else ", or record a profile under this memory with --record DIR"
                    ),
                )
    if recording and actives[0].measure_skip is not None:
        raise ExpectationError(
            options.record or ".",
            f"--record writes the rows measured here, but profile {actives[0].name}'s rows are not:"
            f" {actives[0].measure_skip}",
        )
    return actives


def _cpu_speed_note(profile: Profile, fp: Mapping[str, Any]) -> str | None:
    """Whether a CPU profile's speeds were timed on another CPU model than this machine's, said
    beside each speed a check session judges (None: the same model, or no speed to judge). They are still
    compared: CPU models differ by up to two times in speed, which a CPU profile's wide speed
    tolerance allows for, so only a gross slowdown shows."""
    recorded = profile.hardware.get("cpu")
    here = hardware.cpu_model(fp)
    timed = any(c.time_1k_iters_min is not None or c.tokens_per_sec is not None for c in profile.cases)
    if not timed or recorded is None or recorded == here:
        return None
    return (
        f"speeds timed on the CPU {recorded!r}, this machine's is {here!r}: judged across CPU models,"
        " within the speed tolerance (record this machine's own profile to judge them closely)"
    )


def profile_json(active: ActiveProfile) -> dict[str, Any]:
    """How a results file describes an active profile."""
    return {
        "name": active.name,
        "directory": display(active.profile.directory),
        "mode": active.mode,
        "memory_cap_gb": active.memory_cap_gb,
        "measure_skip": active.measure_skip,
        "speed_skip": active.speed_skip,
        "speed_note": active.speed_note,
        "hardware": dict(active.profile.hardware),
        "software": dict(active.profile.software),
    }
