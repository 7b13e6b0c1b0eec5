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
