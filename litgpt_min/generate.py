"""Text generation with a KV cache, in small verbs (sample, prefill, decode one token, generate),
and the measured inference run of the resource tables (``generate/base.py``'s defaults).

Tokens per second are computed as the reference does (new tokens over the time of the whole
``generate`` call, prefill and sampling included) but with the device synchronized before the clock
is read; the reference read it without synchronizing. And as the measurement protocol says
(``litgpt_min/protocol.py``): one untimed warm-up generation first, then ``num_samples`` timed ones,
their median reported; the reference timed a single cold generation.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from litgpt_min import schedstat
from litgpt_min.build import build_for_run
from litgpt_min.config import Config
from litgpt_min.measure import host_memory, synchronize
from litgpt_min.options import GenerateOptions, RunRequest
from litgpt_min.params import num_params
from litgpt_min.protocol import GENERATION_WARMUP, tokens_per_sec

if TYPE_CHECKING:
    from lightning.fabric import Fabric


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """One token id from the last position's logits ``(1, T, vocab)``; greedy when temperature is 0."""
    logits = logits[0, -1]
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = torch.where(logits < v[[-1]], -float("inf"), logits)
    probs = torch.nn.functional.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1)


def prefill(model: torch.nn.Module, prompt: torch.Tensor) -> torch.Tensor:
    """Run the whole prompt ``(T,)`` through the model, filling the KV cache; returns logits."""
    input_pos = torch.arange(prompt.size(0), device=prompt.device)
    return model(prompt.view(1, -1), input_pos)


def decode_one(model: torch.nn.Module, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Feed one token ``(1,)`` at position ``pos`` ``(1,)``; returns logits."""
    return model(token.view(1, -1), pos)


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    max_returned_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Prompt ``(T,)`` followed by up to ``max_returned_tokens - T`` sampled tokens (the KV cache must be set).

    With ``eos_id``, generation stops at the first sampled eos, which is not included (as in the
    reference, whose comment said otherwise).
    """
    T = prompt.size(0)
    if max_returned_tokens <= T:
        raise ValueError(f"max_returned_tokens {max_returned_tokens} leaves no room after a {T}-token prompt")
    if model.max_seq_length < max_returned_tokens - 1:
        raise ValueError(f"max_seq_length {model.max_seq_length} is shorter than {max_returned_tokens - 1}")
    out = torch.empty(max_returned_tokens, dtype=prompt.dtype, device=prompt.device)
    out[:T] = prompt
    token = sample(prefill(model, prompt), temperature, top_k)
    pos = torch.tensor([T], device=prompt.device)  # stays on the device: no host copy per token
    for i in range(T, max_returned_tokens):
        if eos_id is not None and int(token) == eos_id:  # a host sync, only when asked to stop early
            return out[:i]
        out.index_copy_(0, pos, token)
        if i + 1 < max_returned_tokens:
            token = sample(decode_one(model, token, pos), temperature, top_k)
            pos = pos + 1
    return out


def prompt_ids(options: GenerateOptions, model_name: str, vocab_size: int) -> torch.Tensor:
    """The prompt's token ids: from the real tokenizer when given, else synthetic ids of the real
    length of the default prompt (``GenerateOptions`` refuses a custom prompt without a tokenizer)."""
    if options.tokenizer_dir is not None:
        return torch.tensor(options.tokenizer().encode(options.settings.prompt), dtype=torch.long)
    n = options.prompt_tokens(model_name)
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (n,), generator=generator)


def generate_body(request: RunRequest, config: Config, fabric: Fabric, device: torch.device) -> dict[str, Any]:
    """The measured inference run (used through :func:`litgpt_min.run.execute`); returns the
    result's measured fields."""
    options = request.options
    assert isinstance(options, GenerateOptions)  # execute() pairs each workload with its body
    settings = options.settings
    t0 = time.perf_counter()
    model = build_for_run(request, config, device)
    model.eval()
    total = num_params(model)
    with host_memory():
        prompt = prompt_ids(options, request.model, config.padded_vocab_size)
    max_returned = prompt.size(0) + settings.max_new_tokens
    model.max_seq_length = max_returned
    model = fabric.setup_module(model)
    load_time = time.perf_counter() - t0
    prompt = prompt.to(device, copy=True)  # on the CPU too: the device's copy counts, the host's does not
    torch.manual_seed(settings.seed)
    new_tokens, seconds = [], []
    # The protocol: GENERATION_WARMUP untimed generations first (kernel loading, allocator growth,
    # caches), then num_samples timed ones; the median rate is reported.
    runs = GENERATION_WARMUP + settings.num_samples
    # The scheduler's statistics of the process's threads over the timed generations: time on a CPU
    # and time waiting for one (litgpt_min/schedstat.py).
    sched_start: schedstat.Reading | None = None
    for index in range(runs):
        if index == GENERATION_WARMUP:
            sched_start = schedstat.read_threads()
        untimed = " (warm-up, untimed)" if index < GENERATION_WARMUP else ""
        print(
            f"Generation {index + 1} of {runs}{untimed}: {prompt.size(0)}-token prompt"
            f" + {settings.max_new_tokens} new tokens",
            file=sys.stderr,
            flush=True,
        )
        model.set_kv_cache(batch_size=1, device=device, dtype=request.dtype)
        synchronize(device)
        t = time.perf_counter()
        out = generate(model, prompt, max_returned, temperature=settings.temperature, top_k=settings.top_k)
        synchronize(device)
        elapsed = time.perf_counter() - t
        model.clear_kv_cache()
        generated = out.size(0) - prompt.size(0)
        rate = f"{elapsed:.02f} sec total, {generated / elapsed:.02f} tokens/sec"
        # On stderr, as generate/base.py printed it: standard output holds the result.
        print(f"Time for inference {index + 1}{untimed}: {rate}", file=sys.stderr, flush=True)
        if index < GENERATION_WARMUP:
            continue
        new_tokens.append(generated)
        seconds.append(elapsed)
    cpu_wait = schedstat.since(sched_start)
    rates = tokens_per_sec(new_tokens, seconds, warmup=0)
    return {
        "total_params": total,
        "tokens_per_sec": round(rates.median, 3),
        "details": {
            "prompt_tokens": prompt.size(0),
            "new_tokens": settings.max_new_tokens,
            "tokens_per_sec_all": [round(n / t, 3) for n, t in zip(new_tokens, seconds)],
            "timing": {"warmup_generations": GENERATION_WARMUP, "tokens_per_sec": rates.to_json()},
            "build_seconds": round(load_time, 3),
            schedstat.DETAILS_KEY: schedstat.details(cpu_wait),
        },
    }
