"""Tests for litgpt_min.generate: sampling, KV-cache generation against full forwards, early stop,
prompt ids (real tokenizer or the profile's length). Tiny configs, CPU, fp32."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from real_data import DATA, needs_data

from litgpt_min import data, schedstat
from litgpt_min.adapter import AdapterSettings
from litgpt_min.build import build_model
from litgpt_min.config import Config
from litgpt_min.generate import decode_one, generate, prefill, prompt_ids, sample
from litgpt_min.model import GPT
from litgpt_min.options import GenerateOptions, GenerateSettings, build_request
from litgpt_min.peft import Method
from litgpt_min.protocol import GENERATION_WARMUP
from litgpt_min.result import Result
from litgpt_min.run import execute

CPU = torch.device("cpu")
TOKENIZERS = DATA / "tokenizers"


# ---------------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------------
def _logits(V: int = 50, T: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, T, V, generator=torch.Generator().manual_seed(seed))  # (1, T, V)


def test_sample_is_greedy_at_temperature_zero() -> None:
    logits = _logits()
    for top_k in (None, 1, 5):
        token = sample(logits, temperature=0, top_k=top_k)
        assert token.shape == (1,) and token.dtype == torch.long
        assert int(token) == int(logits[0, -1].argmax())  # the last position decides, not the others
    assert int(logits[0, 0].argmax()) != int(logits[0, -1].argmax())  # (the test would be vacuous otherwise)


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_top_k_restricts_the_support(top_k: int) -> None:
    logits = _logits(V=50) * 0.1  # nearly flat: without the cutoff every token would show up
    allowed = set(logits[0, -1].topk(top_k).indices.tolist())
    torch.manual_seed(1234)
    drawn = {int(sample(logits, temperature=1.0, top_k=top_k)) for _ in range(300)}
    assert drawn <= allowed
    assert len(drawn) == top_k  # and every one of the k is reachable


def test_sampling_without_top_k_reaches_beyond_any_small_k() -> None:
    logits = _logits(V=50) * 0.1
    torch.manual_seed(1234)
    drawn = {int(sample(logits, temperature=1.0, top_k=None)) for _ in range(300)}
    assert len(drawn) > 20
    torch.manual_seed(1234)
    assert {int(sample(logits, temperature=0.8, top_k=200)) for _ in range(300)} - set(range(50)) == set()  # k > V


def test_temperature_sharpens() -> None:
    logits = _logits(V=50)
    best = int(logits[0, -1].argmax())
    torch.manual_seed(0)
    cold = sum(int(sample(logits, temperature=0.05)) == best for _ in range(200))
    hot = sum(int(sample(logits, temperature=5.0)) == best for _ in range(200))
    assert cold > 190 and hot < 100


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------
def _model(name: str, method: str = "none") -> GPT:
    torch.manual_seed(0)
    config, adapter = Config.from_name(name), AdapterSettings(start_layer=0)
    model = build_model(config, cast(Method, method), device=CPU, dtype=torch.float32, adapter=adapter)
    with torch.no_grad():
        # Zero-init gates would make the adapter prefix invisible; open them so its cache path is tested.
        for n, p in model.named_parameters():
            if "gating_factor" in n:
                p.normal_(0, 1)
    return model.eval()


def _prompt(n: int = 5, vocab: int = 320, seed: int = 3) -> torch.Tensor:
    return torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(seed))


def _cached(model: GPT, max_returned: int) -> GPT:
    model.max_seq_length = max_returned
    model.set_kv_cache(batch_size=1, device=CPU)
    return model


@pytest.mark.parametrize("max_new", [1, 2, 7])
def test_generate_returns_the_prompt_and_exactly_max_new_tokens(max_new: int) -> None:
    model, prompt = _model("tiny-llama"), _prompt()
    torch.manual_seed(1234)
    out = generate(_cached(model, 5 + max_new), prompt, 5 + max_new, temperature=0.8, top_k=200)
    assert out.shape == (5 + max_new,) and out.dtype == prompt.dtype
    assert torch.equal(out[:5], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < model.config.padded_vocab_size


MODELS = [("tiny-llama", "none"), ("tiny-falcon", "none"), ("tiny-phi", "none"), ("tiny-neox", "adapter")]


@pytest.mark.parametrize(("name", "method"), MODELS, ids=[f"{n}-{m}" for n, m in MODELS])
def test_kv_cache_logits_equal_full_forwards(name: str, method: str) -> None:
    model, prompt = _model(name, method), _prompt()
    max_returned = 5 + 12
    _cached(model, max_returned)
    tokens = prompt.clone()
    with torch.inference_mode():
        logits = prefill(model, prompt)  # (1, 5, V)
        torch.testing.assert_close(logits, model(prompt[None]), rtol=1e-5, atol=1e-5)
        for pos in range(5, max_returned):
            token = sample(logits, temperature=0)
            tokens = torch.cat([tokens, token])
            logits = decode_one(model, token, torch.tensor([pos]))  # (1, 1, V)
            full = model(tokens[None])  # (1, pos + 1, V), no cache
            torch.testing.assert_close(logits[0, -1], full[0, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "method"), MODELS, ids=[f"{n}-{m}" for n, m in MODELS])
def test_greedy_generation_with_the_cache_equals_repeated_full_forwards(name: str, method: str) -> None:
    model, prompt = _model(name, method), _prompt()
    max_returned = 5 + 12
    out = generate(_cached(model, max_returned), prompt, max_returned, temperature=0)
    model.clear_kv_cache()
    expected = prompt.clone()
    with torch.inference_mode():
        for _ in range(12):
            last = model(expected[None])[0, -1]  # (V,)
            top2 = last.topk(2).values
            assert float(top2[0] - top2[1]) > 1e-4, "a near-tie: pick another seed for this comparison"
            expected = torch.cat([expected, last.argmax().view(1)])
    assert out.tolist() == expected.tolist()


def _greedy(model: GPT, prompt: torch.Tensor, max_returned: int, eos_id: int | None = None) -> list[int]:
    out = generate(_cached(model, max_returned), prompt, max_returned, temperature=0, eos_id=eos_id)
    model.clear_kv_cache()
    return out.tolist()


def _first_new_token_at(full: list[int], k: int) -> int:
    """A generated position >= k whose token did not occur among the generated tokens before it."""
    for i in range(k, len(full)):
        if full[i] not in full[5:i]:
            return i
    pytest.skip("greedy generation repeats one token: no fresh eos candidate")


def test_eos_stops_early() -> None:
    model, prompt = _model("tiny-llama"), _prompt()
    full = _greedy(model, prompt, 5 + 20)
    i = _first_new_token_at(full, 8)
    assert i < len(full) - 1
    # Lit-GPT 8641822 returns idx[:input_pos] when the token at input_pos is eos ("# include the EOS
    # token", but the slice stops before it): the prompt and the tokens before eos.
    assert _greedy(model, prompt, 5 + 20, eos_id=full[i]) == full[:i]
    assert _greedy(model, prompt, 5 + 20, eos_id=-7) == full  # an id never produced: no early stop


def test_eos_as_the_first_new_token() -> None:
    model, prompt = _model("tiny-llama"), _prompt()
    full = _greedy(model, prompt, 5 + 6)
    assert _greedy(model, prompt, 5 + 6, eos_id=full[5]) == full[:5]


def test_eos_as_the_last_possible_token_is_treated_like_any_other() -> None:
    model, prompt = _model("tiny-llama"), _prompt()
    full = _greedy(model, prompt, 5 + 20)
    i = _first_new_token_at(full, 8)
    # Stop generating right where eos appears: it is then the last token the buffer has room for.
    assert _greedy(model, prompt, i + 1, eos_id=full[i]) == full[:i]


def test_bad_max_returned_raises() -> None:
    model, prompt = _model("tiny-llama"), _prompt(n=5)
    _cached(model, 8)
    with pytest.raises(ValueError, match=r"max_returned_tokens 5 leaves no room after a 5-token prompt"):
        generate(model, prompt, 5)
    with pytest.raises(ValueError, match=r"max_returned_tokens 3 leaves no room"):
        generate(model, prompt, 3)
    with pytest.raises(ValueError, match=r"max_seq_length 8 is shorter than 11"):
        generate(model, prompt, 12)


# ---------------------------------------------------------------------------------------------
# prompt_ids
# ---------------------------------------------------------------------------------------------
def test_prompt_ids_use_the_real_tokenizer_when_given() -> None:
    llama2 = TOKENIZERS / "llama2"
    if not (llama2 / "tokenizer.model").is_file():
        pytest.skip(f"{llama2} is absent")
    ids = prompt_ids(GenerateOptions(tokenizer_dir=str(llama2)), "Llama-2-7b-hf", 32000)
    # "Hello, my name is" in Llama 2's SentencePiece vocabulary, BOS first.
    assert ids.tolist() == [1, 15043, 29892, 590, 1024, 338]
    assert ids.dtype == torch.long
    custom = prompt_ids(
        GenerateOptions(GenerateSettings(prompt="What food do llamas eat?"), str(llama2)), "Llama-2-7b-hf", 32000
    )
    assert custom.tolist() == data.Tokenizer(llama2).encode("What food do llamas eat?")
    assert custom[0] == 1 and len(custom) > 6


@pytest.mark.parametrize(
    ("model", "n"),
    [
        ("Llama-2-7b-hf", 6),
        ("CodeLlama-34b-hf", 6),
        ("tiny-llama", 6),
        ("phi-1_5", 5),
        ("stablelm-base-alpha-3b", 5),
        ("pythia-70m", 5),
        ("falcon-7b", 5),
        ("falcon-40b", 5),
        ("tiny-falcon", 5),
        ("tiny-neox", 5),
    ],
)
def test_prompt_ids_without_a_tokenizer_have_the_real_length(model: str, n: int) -> None:
    ids = prompt_ids(GenerateOptions(), model, 320)
    assert ids.shape == (n,) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 320
    assert torch.equal(ids, prompt_ids(GenerateOptions(), model, 320))  # reproducible


@needs_data
@pytest.mark.parametrize("family", data.FAMILIES)
def test_the_profiles_prompt_length_is_the_tokenizers(family: str) -> None:
    directory = TOKENIZERS / family
    tokenizer = data.Tokenizer(directory)
    assert len(tokenizer.encode(GenerateSettings().prompt)) == data.load_length_profile(family).default_prompt_tokens


def test_a_custom_prompt_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match=r"a custom prompt needs --tokenizer-dir"):
        GenerateOptions(GenerateSettings(prompt="Hi"))


# ---------------------------------------------------------------------------------------------
# The measured run: the scheduler's statistics over the timed generations
# ---------------------------------------------------------------------------------------------
def test_the_scheduler_statistics_cover_the_timed_generations_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read when the first timed generation starts (after the warm-up) and after the last; the
    result carries the threads' CPU and wait times of that window."""
    import litgpt_min.generate as gen

    request = build_request(
        "inference",
        {"model": "tiny-llama", "accelerator": "cpu", "precision": "32-true", "max_new_tokens": 3, "num_samples": 2},
    )
    generations: list[int] = []
    read_at: list[int] = []
    real_generate, real_read = gen.generate, schedstat.read_threads

    def counting_generate(*args: Any, **kwargs: Any) -> torch.Tensor:
        generations.append(1)
        return real_generate(*args, **kwargs)

    def reading() -> dict[int, tuple[int, int, int]] | None:
        read_at.append(len(generations))
        return real_read()

    monkeypatch.setattr(gen, "generate", counting_generate)
    monkeypatch.setattr(schedstat, "read_threads", reading)
    result = execute(request, gen.generate_body, preflight=False)
    assert result.outcome == "ok", result.error
    assert read_at == [GENERATION_WARMUP, GENERATION_WARMUP + 2]
    figures = result.details[schedstat.DETAILS_KEY]
    if real_read() is None:  # not Linux: not measured, and no exception
        assert figures is None
        return
    assert figures["on_cpu_s"] > 0 and figures["waiting_s"] >= 0 and figures["threads"] >= 1
    assert 0 <= figures["wait_share"] < 1
    assert Result.from_json(result.to_json()).details[schedstat.DETAILS_KEY] == figures


def test_generate_needs_max_seq_length_one_short_of_max_returned_and_forwards_once_per_new_token() -> None:
    """The last sampled token is never fed back: ``max_new`` forwards (the prefill and
    ``max_new - 1`` decodes), so positions up to ``max_returned - 2`` are all the cache needs."""
    model, prompt = _model("tiny-llama"), _prompt(n=5)
    _cached(model, 10)
    calls: list[int] = []
    hook = model.register_forward_hook(lambda module, args, output: calls.append(args[0].size(1)))
    out = generate(model, prompt, 11, temperature=0)
    hook.remove()
    assert out.shape == (11,)
    assert calls == [5] + [1] * 5  # one prefill of the prompt, then one token at a time
    with pytest.raises(ValueError, match=r"max_seq_length 10 is shorter than 11"):
        generate(model, prompt, 12)


# ---------------------------------------------------------------------------------------------
# The measured run: the clock, the cache and the reported rate
# ---------------------------------------------------------------------------------------------
def test_each_timed_window_is_the_generation_alone_and_the_median_timed_rate_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per generation: the KV cache is set in the run's dtype, the device synchronized, the clock
    read, ``generate`` called with generate/base.py's sampling settings, the device synchronized,
    the clock read, the cache cleared. The rate is new tokens (not the prompt) over that window;
    the warm-up's rate is left out and the median of the timed ones reported."""
    import types

    import litgpt_min.generate as gen

    max_new, durations = 4, [100.0, 2.0, 1.0, 4.0]  # the warm-up, then the timed generations
    request = build_request(
        "inference",
        {
            "model": "tiny-llama",
            "accelerator": "cpu",
            "precision": "bf16-true",
            "max_new_tokens": max_new,
            "num_samples": len(durations) - GENERATION_WARMUP,
        },
    )
    events: list[object] = []
    calls: list[tuple[int, int, dict[str, Any]]] = []  # (prompt length, max_returned, sampling kwargs)
    now = [0.0]
    real_generate, real_set, real_clear = gen.generate, GPT.set_kv_cache, GPT.clear_kv_cache

    def clock() -> float:
        events.append("clock")
        return now[0]

    def set_kv_cache(self: GPT, *args: Any, **kwargs: Any) -> None:
        real_set(self, *args, **kwargs)
        events.append(("cache", {block.attn.kv_cache.k.dtype for block in self.transformer.h}))

    def clear_kv_cache(self: GPT) -> None:
        real_clear(self)
        events.append("clear")

    def timed_generate(model: Any, prompt: torch.Tensor, max_returned: int, **kwargs: Any) -> torch.Tensor:
        events.append("generate")
        calls.append((prompt.size(0), max_returned, kwargs))
        out = real_generate(model, prompt, max_returned, **kwargs)
        now[0] += durations[len(calls) - 1]
        return out

    monkeypatch.setattr(gen, "time", types.SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(gen, "synchronize", lambda device: events.append("sync"))
    monkeypatch.setattr(gen, "generate", timed_generate)
    monkeypatch.setattr(GPT, "set_kv_cache", set_kv_cache)
    monkeypatch.setattr(GPT, "clear_kv_cache", clear_kv_cache)
    result = execute(request, gen.generate_body, preflight=False)
    assert result.outcome == "ok", result.error

    assert len(calls) == len(durations)
    defaults = GenerateSettings()
    for prompt_len, max_returned, kwargs in calls:
        assert max_returned == prompt_len + max_new
        assert kwargs == {"temperature": defaults.temperature, "top_k": defaults.top_k}
    starts = [i for i, event in enumerate(events) if event == "generate"]
    for i in starts:
        assert events[i - 3 : i] == [("cache", {torch.bfloat16}), "sync", "clock"]
        assert events[i + 1 : i + 4] == ["sync", "clock", "clear"]
    rates = [max_new / d for d in durations[GENERATION_WARMUP:]]
    assert result.details["tokens_per_sec_all"] == rates
    assert result.tokens_per_sec == sorted(rates)[len(rates) // 2]
    assert result.details["prompt_tokens"] == calls[0][0] and result.details["new_tokens"] == max_new
