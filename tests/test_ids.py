"""Test ids over the real profiles: unique, stable, and ``-k`` selects what a user means.

The items are collected once, in-process, from the real check functions and the real
``expectations/`` profiles; ``-k`` is evaluated with pytest's own matcher (what ``-k`` runs on
every item) against a predicate on the row's fields, for single tokens and for hypothesis-drawn
expressions. A few tokens are also run through a real ``--collect-only -k`` as ground truth.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _pytest.mark import KeywordMatcher
from _pytest.mark.expression import Expression
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.expectations import DEFAULT_ROOT, Case, case_id, load_profile

pytest_plugins = ["pytester"]

PROFILES = ("a100-sxm4-40gb", "cpu-tiny")
MODELS = {
    "phi_1_5": "phi-1_5",
    "stablelm_3b": "stablelm-base-alpha-3b",
    "llama2_7b": "Llama-2-7b-hf",
    "llama2_13b": "Llama-2-13b-hf",
    "llama2_70b": "Llama-2-70b-hf",
    "codellama_34b": "CodeLlama-34b-hf",
    "falcon_40b": "falcon-40b",
    "tiny_llama": "tiny-llama",
}
# The selectors of issue 3, then a few more a user would type.
ISSUE_TOKENS = (
    "llama2_7b", "phi_1_5", "stablelm_3b", "llama2_13b", "llama2_70b", "codellama_34b", "falcon_40b",
    "lora", "adapter_v2", "nf4", "nf4_dq", "mb2", "2gpu",
)  # fmt: skip
TOKENS = (
    *ISSUE_TOKENS,
    "tiny_llama",
    "adapter",
    "noquant",
    "mb1",
    "mb4",
    "mb8",
    "1gpu",
    "4gpu",
    "finetune",
    "inference",
)


def means(token: str, case: Case) -> bool:
    """What a user means by ``-k token``, from the row's fields."""
    if token in MODELS:
        return case.model == MODELS[token]
    if token in ("lora", "adapter_v2"):
        return case.method == token
    if token == "adapter":  # Adapter v1 and v2 alike, as the word says
        return case.method in ("adapter", "adapter_v2")
    if token == "nf4":  # plain and double-quantized NF4
        return case.quantize in ("bnb.nf4", "bnb.nf4-dq")
    if token == "nf4_dq":
        return case.quantize == "bnb.nf4-dq"
    if token == "noquant":
        return case.quantize is None
    if token in ("finetune", "inference"):
        return case.workload == token
    if match := re.fullmatch(r"mb(\d+)", token):
        return case.micro_batch_size == int(match.group(1))
    if match := re.fullmatch(r"(\d+)gpu", token):
        return case.devices == int(match.group(1))
    raise AssertionError(f"no meaning for {token!r}")


@dataclass(frozen=True)
class Item:
    nodeid: str
    name: str
    case: Case
    matcher: KeywordMatcher


@pytest.fixture(scope="module")
def cases() -> dict[tuple[str, str], Case]:
    return {(name, case.id): case for name in PROFILES for case in load_profile(name).cases}


@pytest.fixture
def items(pytester: pytest.Pytester, cases: dict[tuple[str, str], Case]) -> list[Item]:
    pytester.makeconftest('pytest_plugins = ["conformance.plugin"]')
    pytester.makepyfile(test_rows="from conformance.test_rows import test_params, test_run, test_speed")
    args = [f"--expectations={DEFAULT_ROOT}", *[a for name in PROFILES for a in ("--profile", name)]]
    collected, _ = pytester.inline_genitems("-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args)
    return [
        Item(i.nodeid, i.name, cases[i.callspec.params["conformance_row"]], KeywordMatcher.from_item(i))
        for i in collected
    ]


def test_every_row_has_each_check_once_with_a_unique_stable_id(items: list[Item], cases: dict) -> None:
    assert len({i.nodeid for i in items}) == len(items)
    for item in items:
        c = item.case
        assert (
            item.name.split("[", 1)[1]
            == f"{c.profile}:{case_id(c.workload, c.method, c.model, c.quantize, c.micro_batch_size, c.devices)}]"
        )
    for kind in ("test_params", "test_run"):
        assert sorted((i.case.profile, i.case.id) for i in items if i.name.startswith(kind + "[")) == sorted(cases)


def test_only_the_id_carries_row_words(items: list[Item]) -> None:
    # Profile names, markers, the module and the package must not match a selector by accident.
    for item in items:
        others = [n for n in item.matcher._names if n != item.name]
        for token in TOKENS:
            assert not any(token in n.lower() for n in others), (item.nodeid, token, others)


def test_single_tokens_select_what_they_mean(items: list[Item]) -> None:
    for token in TOKENS:
        expr = Expression.compile(token)
        wrong = [i.nodeid for i in items if expr.evaluate(i.matcher) != means(token, i.case)]
        assert not wrong, f"-k {token} disagrees on {wrong[:3]}"
        assert any(means(token, i.case) for i in items), f"-k {token} selects nothing"


def _expressions() -> st.SearchStrategy[tuple[str, Callable[[Case], bool]]]:
    leaves = st.sampled_from(TOKENS).map(lambda t: (t, lambda c, t=t: means(t, c)))

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        def neg(e):
            return (f"not ({e[0]})", lambda c: not e[1](c))

        def both(a, b):
            return (f"({a[0]}) and ({b[0]})", lambda c: a[1](c) and b[1](c))

        def either(a, b):
            return (f"({a[0]}) or ({b[0]})", lambda c: a[1](c) or b[1](c))

        return st.one_of(children.map(neg), st.builds(both, children, children), st.builds(either, children, children))

    return st.recursive(leaves, extend, max_leaves=4)


def test_k_expressions_select_what_they_mean(items: list[Item]) -> None:
    @settings(max_examples=150, deadline=None, database=None)
    @given(_expressions())
    def check(expression: tuple[str, Callable[[Case], bool]]) -> None:
        text, meaning = expression
        expr = Expression.compile(text)
        wrong = [i.nodeid for i in items if expr.evaluate(i.matcher) != meaning(i.case)]
        assert not wrong, f"-k {text!r} disagrees on {wrong[:3]}"

    check()


@pytest.mark.parametrize(
    "token", ["llama2_7b", "nf4_dq", "2gpu", "[a100-sxm4-40gb:finetune-lora-llama2_7b-noquant-mb1-1gpu]"]
)
def test_real_k_runs_agree(pytester: pytest.Pytester, cases: dict[tuple[str, str], Case], token: str) -> None:
    pytester.makeconftest('pytest_plugins = ["conformance.plugin"]')
    pytester.makepyfile(test_rows="from conformance.test_rows import test_params, test_run, test_speed")
    args = [f"--expectations={DEFAULT_ROOT}", "--profile", "a100-sxm4-40gb", "-k", token]
    collected, recorder = pytester.inline_genitems("-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args)
    deselected = {i.nodeid for call in recorder.getcalls("pytest_deselected") for i in call.items}
    collected = [i for i in collected if i.nodeid not in deselected]
    rows = {i.callspec.params["conformance_row"] for i in collected}
    if token.startswith("["):
        assert rows == {("a100-sxm4-40gb", "finetune-lora-llama2_7b-noquant-mb1-1gpu")}
        assert len(collected) == 3
    else:
        assert rows == {key for key, c in cases.items() if key[0] == "a100-sxm4-40gb" and means(token, c)}
