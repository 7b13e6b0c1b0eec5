"""4-bit weight quantization with bitsandbytes: swap ``nn.Linear`` for ``bnb.nn.Linear4bit``.

What the reference does (Lit-GPT 8641822 + Lightning 2.1's ``BitsandbytesPrecision``): every
``torch.nn.Linear`` in the model becomes a bnb 4-bit layer: the fused qkv, ``attn.proj``, the MLP
linears, **the lm_head**, and the frozen ``linear`` inside each LoRA / Adapter-v2 wrapper.
Embeddings and norms stay in the compute dtype. LoRA's ``lora_A``/``lora_B`` and the adapters'
``gating_factor``/``adapter_bias``/``adapter_scale`` are raw Parameters, not Linear modules, so
they are never touched. We do the same here on bnb's own API, because Lightning refuses its plugin
on CPU ("Bitsandbytes is only supported on CUDA GPUs") and our tests run on CPU.

The flow for a big model (no moment holds the whole unquantized model)::

    with torch.device("meta"):
        model = GPT(config)                       # no memory
    model = apply_method(model, "lora", ...)      # still meta
    model = quantize_model(model, "bnb.nf4", device=dev, compute_dtype=torch.bfloat16,
                           init=checkpoint_loader)   # one Linear at a time: bf16 -> 4-bit on dev
    materialize_rest(model, dev, torch.bfloat16)  # embeddings, norms, biases, LoRA/adapter params

``quantize_model`` materializes each Linear's weight (``init(name, linear)``, or kaiming-uniform
like ``nn.Linear``), quantizes it on ``device`` and drops the unquantized copy before the next
layer: peak = one layer's unquantized weight + the quantized layers so far. A Llama-2-70B
(~38.8 GB of nf4 weights) therefore fits in ~40 GB of GPU memory.

``import bitsandbytes`` happens only inside functions: importing this module costs no bnb import
time (~3.5 s) and works where bnb is not installed.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor, nn

from litgpt_min.quoting import quoted
from litgpt_min.usage import LEFT_OUT_QUANTIZE, LEFT_OUT_TEXT


class _OptionalCpuKernelNotice(logging.Filter):
    """Drops the one warning bitsandbytes' CPU backend logs at import on CPUs with AVX512-BF16
    when the optional ``kernels`` package (a faster 4-bit CPU gemm fetched from the Hugging Face
    hub) is absent: bnb then uses its own CPU kernel, which is the one this project runs. Every
    other record of that logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in str(record.msg)


# Installed on import, before any function here imports bitsandbytes (its backend logs at import).
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_OptionalCpuKernelNotice())

if TYPE_CHECKING:
    from bitsandbytes.functional import QuantState
    from bitsandbytes.nn import Linear4bit

QuantizeMode = Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"]
QUANTIZE_MODES: tuple[QuantizeMode, ...] = get_args(QuantizeMode)

# bnb's 4-bit block size (the default of bnb.functional.quantize_4bit and of Params4bit, and what
# Lightning 2.1 used). Double quantization re-quantizes the per-block absmax in blocks of 256.
BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256

WeightInit = Callable[[str, nn.Linear], Tensor]
"""``init(qualified_module_name, meta_linear) -> weight`` of shape (out_features, in_features)."""
TensorInit = Callable[[str, Tensor], Tensor | None]
"""``init(qualified_tensor_name, meta_tensor) -> value`` or None for the default rule."""
SkipFn = Callable[[str, nn.Module], bool]


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bnb4bitArgs:
    """The arguments handed to ``Linear4bit`` / ``Params4bit`` for one mode.

    Both ``quant_type`` and ``compress_statistics`` are always passed explicitly: bnb's own
    defaults are ``quant_type="fp4"`` and ``compress_statistics=True``, neither of which is what
    plain "bnb.nf4" means.
    """

    quant_type: Literal["nf4", "fp4"]
    compress_statistics: bool  # double quantization ("-dq")
    blocksize: int = BLOCKSIZE
    quant_storage: torch.dtype = torch.uint8


def parse_mode(text: str) -> QuantizeMode:
    """``"bnb.nf4-dq"`` -> the mode; anything else -> ValueError listing the valid modes (and the
    one meant, for a misspelling)."""
    for mode in QUANTIZE_MODES:
        if text == mode:
            return mode
    if text in LEFT_OUT_QUANTIZE:
        hint = f" ({LEFT_OUT_TEXT})"
    else:
        close = difflib.get_close_matches(text.lower(), QUANTIZE_MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown quantize mode {quoted(text)}{hint}; valid modes: {', '.join(QUANTIZE_MODES)}")


_BNB_ARGS: dict[QuantizeMode, Bnb4bitArgs] = {
    "bnb.nf4": Bnb4bitArgs(quant_type="nf4", compress_statistics=False),
    "bnb.nf4-dq": Bnb4bitArgs(quant_type="nf4", compress_statistics=True),
    "bnb.fp4": Bnb4bitArgs(quant_type="fp4", compress_statistics=False),
    "bnb.fp4-dq": Bnb4bitArgs(quant_type="fp4", compress_statistics=True),
}


def bnb_args(mode: QuantizeMode) -> Bnb4bitArgs:
    """The bnb arguments of a mode: "bnb.nf4" -> nf4 without double quantization, and so on."""
    return _BNB_ARGS[parse_mode(mode)]


# The first bitsandbytes releases with CPU code for what a 4-bit run calls: the 4-bit layers
# (quantize, matmul) and the optimizers (a finetune's PagedAdamW). On the CPU older ones fail deep
# inside bnb: 0.45 with a bare AssertionError at the first 4-bit matmul, 0.46-0.49 with "'NoneType'
# object has no attribute 'shape'" at the first optimizer step.
BNB_CPU_SINCE: dict[str, tuple[int, int]] = {"4-bit layers": (0, 46), "optimizers": (0, 50)}


def bnb_cpu_problem(finetune: bool) -> str | None:
    """Why the installed bitsandbytes cannot run a 4-bit run (``finetune``: with its optimizer) on
    the CPU, or None. Reads the installed version from its metadata: bnb is not imported."""
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return None  # the run's own import says so
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        return None
    have = (int(found[1]), int(found[2]))
    need = max(BNB_CPU_SINCE.values()) if finetune else BNB_CPU_SINCE["4-bit layers"]
    missing = [f"its {what} ({since[0]}.{since[1]}.0)" for what, since in BNB_CPU_SINCE.items() if have < since <= need]
    if not missing:
        return None
    return (
        f"bitsandbytes {version} has no CPU code for {' or '.join(missing)}: a 4-bit"
        f" {'finetune' if finetune else 'run'} on the CPU needs bitsandbytes>={need[0]}.{need[1]}"
        f" (pip install 'bitsandbytes>={need[0]}.{need[1]}')"
    )


# ---------------------------------------------------------------------------------------------
# Swapping and quantizing
# ---------------------------------------------------------------------------------------------
def quantize_model(
    model: nn.Module,
    mode: QuantizeMode,
    *,
    device: torch.device | str,
    compute_dtype: torch.dtype,
    init: WeightInit | None = None,
    skip: SkipFn | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Replace every ``nn.Linear`` (not skipped) with a ``bnb.nn.Linear4bit``, in place.

    Which layers: **every** ``nn.Linear`` whose qualified name ``skip(name, module)`` does not
    reject, regardless of ``requires_grad`` (the runners mark trainables after quantizing, so a
    base weight may still say requires_grad=True here). That is the reference's behaviour: the
    lm_head and the ``.linear`` inside PEFT wrappers are quantized too. Quantized weights are
    always frozen. Layers already 4-bit are left alone.

    The weight of each layer comes from, in order:

    - ``init(name, linear)`` when given (a checkpoint loader returns the stored weight; any
      device, cast to ``compute_dtype``); it must have shape (out_features, in_features);
    - the layer's own weight, when it is not on the meta device;
    - otherwise kaiming-uniform(a=sqrt(5)) in ``compute_dtype`` on ``device``: the default of
      ``nn.Linear`` and of Lightning's ``_Linear4bit.reset_parameters``, i.e. what the reference
      holds before it loads the checkpoint over it.

    The weight is quantized by moving its ``Params4bit`` to ``device`` (on CPU ``.to("cpu")``
    quantizes, on CUDA ``.to("cuda:N")``) and the unquantized tensor is released before the next
    layer. ``device="meta"`` swaps the modules only: the weights stay unquantized meta
    placeholders (for counting: ``litgpt_min.params.num_params`` and ``weight_bytes`` see through them).

    The bias, if any, stays a regular frozen Parameter in ``compute_dtype``: moved to ``device``
    when real, left on meta otherwise (``materialize_rest`` fills it in). Everything that is not a
    Linear (embeddings, norms, LoRA/adapter parameters) is untouched.

    ``progress(done, total)`` is called after each layer (quantizing a 7B model takes minutes on a CPU).

    Returns the model (a new object only when ``model`` itself is an ``nn.Linear``).
    """
    import bitsandbytes as bnb

    args = bnb_args(mode)
    device = torch.device(device)
    # Names only: holding the modules themselves would keep every replaced layer (and a real
    # unquantized weight) alive until the end of the loop.
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not isinstance(module, bnb.nn.Linear4bit)
        and not (skip is not None and skip(name, module))
    ]
    for done, name in enumerate(targets, 1):
        replacement = _quantized_linear(name, model.get_submodule(name), args, device, compute_dtype, init)
        if progress is not None:
            progress(done, len(targets))
        if not name:
            return replacement
        parent_name, _, attr = name.rpartition(".")
        # The replaced Linear (and any real unquantized weight it held) is released here.
        setattr(model.get_submodule(parent_name), attr, replacement)
        del replacement
    return model


def _quantized_linear(
    name: str,
    linear: nn.Linear,
    args: Bnb4bitArgs,
    device: torch.device,
    compute_dtype: torch.dtype,
    init: WeightInit | None,
) -> Linear4bit:
    import bitsandbytes as bnb

    # Built on meta so that nn.Linear.__init__ neither allocates nor kaiming-inits a throw-away
    # fp32 weight (that is ~1 s and ~1 GB per Llama-2-70B MLP layer).
    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=args.compress_statistics,
        quant_type=args.quant_type,
        quant_storage=args.quant_storage,
        device="meta",
    )
    # On CPUs with AVX512-BF16, bnb repacks the weight at the first eval/no-grad forward into a
    # bf16-only layout (absmax turned to bf16, double quantization undone). That would make the
    # numerics, the byte counts and the state dict depend on the CPU model; keep bnb's portable path.
    layer.support_avx512bf16_for_cpu = False
    layer.train(linear.training)

    weight = _unquantized_weight(name, linear, device, compute_dtype, init)
    params = bnb.nn.Params4bit(
        weight,
        requires_grad=False,
        blocksize=args.blocksize,
        compress_statistics=args.compress_statistics,
        quant_type=args.quant_type,
        quant_storage=args.quant_storage,
        module=layer,
    )
    del weight
    if device.type != "meta":
        params = params.to(device)  # this is what quantizes (Params4bit._quantize)
    layer.weight = params

    if linear.bias is not None:
        bias = linear.bias.detach()
        bias = (
            torch.empty_like(bias, dtype=compute_dtype, device="meta")
            if bias.is_meta or device.type == "meta"
            else bias.to(device, compute_dtype)
        )
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


def _unquantized_weight(
    name: str, linear: nn.Linear, device: torch.device, compute_dtype: torch.dtype, init: WeightInit | None
) -> Tensor:
    shape = (linear.out_features, linear.in_features)
    if device.type == "meta":
        return torch.empty(shape, dtype=compute_dtype, device="meta")
    if init is not None:
        weight = init(name, linear)
        if tuple(weight.shape) != shape:
            raise ValueError(f"quantize: init returned shape {tuple(weight.shape)} for {name!r}, expected {shape}")
        if weight.is_meta:
            raise ValueError(f"quantize: init returned a meta tensor for {name!r}")
        return weight.detach().to(dtype=compute_dtype)
    if not linear.weight.is_meta:
        return linear.weight.detach().to(dtype=compute_dtype)
    weight = torch.empty(shape, dtype=compute_dtype, device=device)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


# ---------------------------------------------------------------------------------------------
# Materializing everything else
# ---------------------------------------------------------------------------------------------
def materialize_rest(
    model: nn.Module,
    device: torch.device | str,
    dtype: torch.dtype,
    init: TensorInit | None = None,
    *,
    recurse: bool = True,
) -> nn.Module:
    """Give every parameter and buffer still on the meta device real storage on ``device``, in place.
    ``recurse=False``: only ``model``'s own tensors, not its submodules'.

    Floating-point parameters get ``dtype``; buffers and integer tensors keep their own dtype.
    ``requires_grad`` and buffer persistence are kept. Each tensor's value comes from, in order:

    1. ``init(qualified_name, meta_tensor)`` when it returns a tensor (a checkpoint loader);
    2. a rule by module type (the inits of PyTorch's layers):

       ============================================ ==========================================
       ``nn.Embedding.weight`` (incl. adapter_wte)  normal(0, 1), the nn.Embedding default
       norm ``weight`` / ``bias``                   ones / zeros (LayerNorm, *RMSNorm, *Norm)
       ``nn.Linear`` ``weight`` / ``bias``          kaiming-uniform a=sqrt(5) / U(±1/sqrt(in))
       ============================================ ==========================================

       (``Linear4bit`` biases use the nn.Linear bias rule; quantized weights are never meta.)
    3. the owning module's ``reset_parameters()`` (the torch / FSDP convention), called after its
       meta tensors are allocated, for a module with tensors that neither 1 nor 2 covers: the PEFT
       layers (``lora_A`` kaiming-uniform, ``lora_B``/``gating_factor``/``adapter_bias`` zeros,
       ``adapter_scale`` ones, as their ``reset_parameters`` say), or a model that rebuilds its RoPE
       buffers there. Values from 1 and 2 are written after it.

    A meta tensor that none of these covers raises ValueError naming it.
    """
    device = torch.device(device)
    for module_name, module in model.named_modules() if recurse else [("", model)]:
        metas = [(local, t, True) for local, t in module.named_parameters(recurse=False) if t.is_meta]
        metas += [(local, t, False) for local, t in module.named_buffers(recurse=False) if t.is_meta]
        if not metas:
            continue
        planned: list[tuple[Tensor, Callable[[Tensor], None] | Tensor]] = []
        uncovered: list[str] = []
        for local, meta, is_param in metas:
            qualified = f"{module_name}.{local}" if module_name else local
            target_dtype = dtype if is_param and meta.is_floating_point() else meta.dtype
            fresh = torch.empty(meta.shape, dtype=target_dtype, device=device)
            if is_param:
                module._parameters[local] = nn.Parameter(fresh, requires_grad=meta.requires_grad)
            else:
                module._buffers[local] = fresh
            value = init(qualified, meta) if init is not None else None
            if value is not None:
                if tuple(value.shape) != tuple(meta.shape):
                    raise ValueError(
                        f"materialize_rest: init returned shape {tuple(value.shape)} for {qualified!r}, expected {tuple(meta.shape)}"
                    )
                planned.append((fresh, value))
                continue
            rule = _default_rule(module, local)
            if rule is None:
                uncovered.append(qualified)
            else:
                planned.append((fresh, rule))
        if uncovered:
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                listed = ", ".join(f"{n!r}" for n in uncovered)
                raise ValueError(
                    f"materialize_rest: no initializer for {listed} ({type(module).__name__}): "
                    "pass init=..., or give the module a reset_parameters()"
                )
            with torch.no_grad():
                reset()
        with torch.no_grad():
            for fresh, how in planned:
                if isinstance(how, Tensor):
                    fresh.copy_(how)
                else:
                    how(fresh)
    return model


def _default_rule(module: nn.Module, local: str) -> Callable[[Tensor], None] | None:
    # PEFT parameters (lora_A/B, gating_factor, adapter_bias/scale) have no rule here: their
    # layers' reset_parameters() defines their initialization, and materialize_rest falls back to it.
    if isinstance(module, nn.Embedding) and local == "weight":
        return lambda t: _embedding_init(t, module.padding_idx)
    if _is_norm(module) and local in ("weight", "bias"):
        return nn.init.ones_ if local == "weight" else nn.init.zeros_
    if isinstance(module, nn.Linear) and local == "weight":
        return lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    if isinstance(module, nn.Linear) and local == "bias":
        bound = 1 / math.sqrt(module.in_features) if module.in_features > 0 else 0.0
        return lambda t: nn.init.uniform_(t, -bound, bound)
    return None


def _embedding_init(t: Tensor, padding_idx: int | None) -> None:
    nn.init.normal_(t)
    if padding_idx is not None:
        t[padding_idx].zero_()


def _is_norm(module: nn.Module) -> bool:
    # RMSNorm lives in litgpt_min.model (and torch >= 2.4 has nn.RMSNorm); match by name so this
    # module imports nothing from the model.
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or type(module).__name__.endswith("Norm")


# ---------------------------------------------------------------------------------------------
# Counting bytes
# ---------------------------------------------------------------------------------------------
def quantized_weight_bytes(out_features: int, in_features: int, mode: QuantizeMode) -> int:
    """Bytes bnb stores for one quantized (out, in) weight, computed without bnb (meta models).

    Equals ``weight_bytes`` of the real layer's weight, to the byte. For n = out*in values in
    blocks of 64 (the last one may be partial; blocks run over the flattened weight):

    - packed codes: ceil(n/2) uint8;
    - without "-dq": one fp32 absmax per block (4 bytes);
    - with "-dq": one uint8 absmax per block, plus one fp32 absmax per 256 of those, plus a 4-byte
      fp32 offset (the mean of the absmax that double quantization subtracts).

    So 4096x4096: nf4 9,437,184 bytes (0.5625 B/param), nf4-dq 8,654,852 bytes. fp4 = nf4.
    Not counted: the code tables (16 fp32 values, 64 bytes; with "-dq" also a 256-entry fp32
    dynamic map, 1,024 bytes) that bnb 0.50.2 keeps per layer, i.e. < 0.7 MB for a whole 70B model.
    """
    args = bnb_args(mode)
    return _packed_4bit_bytes(out_features * in_features, args.blocksize, args.compress_statistics, args.quant_storage)


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters, a 4-bit weight counting as stored by bnb.

    A quantized ``Params4bit`` counts its packed data plus its quant state's tensors: ``absmax``
    and, with double quantization, the nested ``absmax`` and the ``offset`` (code tables left out;
    see ``quantized_weight_bytes``). A not-yet-quantized ``Params4bit`` (meta placeholder) counts
    what it will cost once quantized. Every other parameter counts numel * element_size, so this
    works on meta models too. Buffers (RoPE, KV cache) are not counted.
    """
    return sum(weight_bytes_of(p) for p in module.parameters())


def weight_bytes_of(p: Tensor) -> int:
    """``weight_bytes`` of one parameter."""
    if not is_params4bit(p):
        return p.numel() * p.element_size()
    if p.bnb_quantized and p.quant_state is not None:
        return p.numel() * p.element_size() + sum(
            t.numel() * t.element_size() for t in _quant_state_tensors(p.quant_state)
        )
    return _packed_4bit_bytes(p.numel(), p.blocksize, p.compress_statistics, p.quant_storage)


def model_weight_bytes(model: nn.Module, quantize: QuantizeMode | None, dtype: torch.dtype) -> int:
    """Bytes of ``model``'s weights once built in ``dtype`` and (optionally) quantized; works on meta models.

    For ``litgpt-min params``: with ``quantize``, every ``nn.Linear`` weight counts as
    ``quantized_weight_bytes`` (the reference swaps every Linear, lm_head and PEFT ``.linear``
    included); every other floating-point parameter counts numel * ``dtype``'s size; layers that
    are already 4-bit count as ``weight_bytes`` does. Equals ``weight_bytes`` of the same model
    after ``quantize_model`` + ``materialize_rest`` in ``dtype``.
    """
    mode = parse_mode(quantize) if quantize is not None else None
    total = 0
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            if is_params4bit(p):
                total += weight_bytes_of(p)
            elif mode is not None and local == "weight" and isinstance(module, nn.Linear):
                total += quantized_weight_bytes(module.out_features, module.in_features, mode)
            else:
                total += p.numel() * (dtype.itemsize if p.is_floating_point() else p.element_size())
    return total


def _packed_4bit_bytes(n: int, blocksize: int, nested: bool, storage: torch.dtype) -> int:
    values_per_element = storage.itemsize * 2  # two 4-bit codes per byte
    packed = -(n // -values_per_element) * storage.itemsize
    blocks = -(n // -blocksize)
    if not nested:
        return packed + 4 * blocks
    return packed + blocks + 4 * -(blocks // -NESTED_BLOCKSIZE) + 4


def _quant_state_tensors(quant_state: QuantState) -> Iterator[Tensor]:
    yield quant_state.absmax
    if quant_state.nested:
        yield quant_state.state2.absmax
        yield quant_state.offset


def is_params4bit(p: Tensor) -> bool:
    """Whether ``p`` is a bitsandbytes 4-bit weight (quantized or a meta placeholder)."""
    # A Params4bit can only exist once bitsandbytes is imported; checking sys.modules keeps the
    # counters free of the ~3.5 s bnb import for models that were never quantized.
    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(p, bnb.nn.Params4bit)


# ---------------------------------------------------------------------------------------------
# Saving and loading quantized weights
# ---------------------------------------------------------------------------------------------
def load_quantized_state(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, device: torch.device | str
) -> dict[str, Tensor]:
    """Load every ``Linear4bit`` weight of ``model`` from a state dict saved by a quantized model.

    A quantized layer's state dict (``model.state_dict()``) holds ``<layer>.weight`` (the packed
    codes) and ``<layer>.weight.<stat>`` entries (``absmax``, ``quant_map``, ``nested_*`` and a
    packed ``quant_state.bitsandbytes__<nf4|fp4>``). Plain ``load_state_dict`` cannot take them
    back; ``Params4bit.from_prequantized`` can, bit-identically. The target layers may hold
    quantized weights or meta placeholders (``quantize_model(..., device="meta")``).

    Returns the entries it did not consume (biases, embeddings, norms, LoRA...), for the caller's
    ``model.load_state_dict(rest, strict=False)``. A Linear4bit with no weight in ``state_dict``
    raises ValueError.
    """
    import bitsandbytes as bnb

    device = torch.device(device)
    rest = dict(state_dict)
    for name, layer in model.named_modules():
        if not isinstance(layer, bnb.nn.Linear4bit):
            continue
        key = f"{name}.weight" if name else "weight"
        if key not in rest:
            raise ValueError(f"load_quantized_state: state dict has no {key!r} for Linear4bit {name!r}")
        data = rest.pop(key)
        stats = {k.removeprefix(key + "."): rest.pop(k) for k in [k for k in rest if k.startswith(key + ".")]}
        if not stats:
            raise ValueError(
                f"load_quantized_state: {key!r} has no quant state entries ({key}.absmax, ...): not a quantized checkpoint"
            )
        layer.weight = bnb.nn.Params4bit.from_prequantized(
            data, stats, requires_grad=False, device=device, module=layer
        )
    return rest


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------
def paged_adamw(params: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``bitsandbytes.optim.PagedAdamW`` with the reference's arguments (finetune/lora.py under --quantize).

    bnb's defaults otherwise: betas (0.9, 0.999), eps 1e-8, 32-bit states. Note the states are
    **fp32 even for bf16 parameters** (bnb allocates them in float32), unlike torch's AdamW, which
    keeps them in the parameter dtype. On CPU bnb warns "Paged optimizers are not supported on CPU"
    and runs un-paged.
    """
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW(params, lr=lr, weight_decay=weight_decay)
