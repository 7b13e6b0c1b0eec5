"""What a `-k` that selects no row of the suite is told: row ids name each model by its slug
(``llama2_7b``), not by its registry name (``Llama-2-7b-hf``), and spell every other part as
``case_id`` does (``nf4_dq``, ``adapter_v2``, ``2gpu``): a word no row id contains is named, with
the parts it resembles; an expression that selects rows of the folder's other profiles names them,
with the ``--profile`` that checks them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from conformance.display import suite_command
from conformance.expectations import QUANT_SLUGS, model_slug
from conformance.rules import CHECKS, applies
from litgpt_min.quoting import quoted

# The parts of a row id, in its order (``case_id``), each with how it is read from a row.
_PARTS: tuple[tuple[str, Any], ...] = (
    ("workloads", lambda c: c.workload),
    ("methods", lambda c: c.method),
    ("models", lambda c: model_slug(c.model)),
    ("quantizations", lambda c: QUANT_SLUGS.get(c.quantize)),
    ("micro-batches", lambda c: None if c.micro_batch_size is None else f"mb{c.micro_batch_size}"),
    ("devices", lambda c: f"{c.devices}gpu"),
)
_OPERATORS = {"and", "or", "not"}
SHOWN_EXPRESSION = 200  # the characters of an expression (or of one word of it) the hint shows
_MODULE_NAMES = ("conformance", "test_rows.py")


def no_row_hint(
    keyword: str,
    cases: Iterable[Any],
    speed_rows: int | None = None,
    others: Mapping[str, Iterable[Any]] | None = None,
    chosen: Sequence[str] = (),
    defaults: Collection[str] = (),
    listing: str | None = None,
    prefix: str = "conformance: ",
) -> str:
    """One line for a `-k` expression that deselected every row of ``cases`` (``Case``: their
    profiles, whose names begin every row id, their models and the other parts of their ids);
    ``speed_rows``: how many active rows have a speed figure (test_speed checks only those).
    ``others``: the rows of the folder's other profiles, by profile, named when it selects some of
    them, with the ``--profile`` that checks them (``chosen``: the session's; ``defaults``: the
    profiles a session without one checks here). ``listing``: the command that lists every id;
    ``prefix``: what the line begins with (the command's name)."""
    cases = list(cases)
    others = {name: list(rows) for name, rows in sorted((others or {}).items())}
    everywhere = cases + [c for rows in others.values() for c in rows]
    profiles = sorted({c.profile for c in cases})
    head = f"{prefix}-k {_shown(keyword)} selects no row"
    if elsewhere := _elsewhere(keyword, others, chosen, defaults):
        # The expression is right; the session checks other profiles than the rows it names.
        return f"{head} of {', '.join(profiles)}; {elsewhere}"
    if speed_rows is not None and _written("test_speed", keyword):
        if not speed_rows:
            return (
                f"{head}: test_speed checks the rows with a speed figure, and no active profile has one"
                f" ({', '.join(profiles)})"
            )
        speed = "; test_speed checks only the rows with a speed figure (not the OOM, N/A and error rows)"
    else:
        speed = ""
    # Registry names written in the expression (`-k "Llama-2-7b-hf and lora"`), longest first, and
    # profile names with their dashes written as underscores (`-k cpu_tiny`), the other profiles' too.
    model_fixes = {
        name: model_slug(name)
        for name in sorted({c.model for c in everywhere}, key=len, reverse=True)
        if _written(name, keyword) and name != model_slug(name)
    }
    named = [*profiles, *others]
    profile_fixes = {p.replace("-", "_"): p for p in named if "-" in p and _written(p.replace("-", "_"), keyword)}
    said = []
    if model_fixes or profile_fixes:
        kinds = [("a model by its slug", model_fixes), ("a profile by its name", profile_fixes)]
        said.append(f"row ids name {' and '.join(kind for kind, fixes in kinds if fixes)}")
        keyword_now = _fixed(keyword, {**model_fixes, **profile_fixes})
    else:
        keyword_now = keyword
    if not said or _unknown_words(keyword_now, everywhere):
        # A word no row id contains, the other profiles' included (`-k "Llama-2-7b-hf and nf4dq"`).
        text, keyword_now = _parts_hint(
            keyword_now, cases, everywhere, listing or f"{suite_command()} --collect-only -q", keyword
        )
        said.append(text)
    if keyword_now is None:
        return f"{head}: {'; '.join(said)}{speed}"
    line = f"{head}: {'; '.join(said)}; try -k {_shown(keyword_now)}"
    if not any(_matches(keyword_now, _names(c.profile, c)) for c in cases):
        # Spelled right, it names rows of a profile the session does not check (`--profile cpu-tiny`).
        if elsewhere := _elsewhere(keyword_now, others, chosen, defaults):
            return f"{line}, which selects no row of {', '.join(profiles)}; {elsewhere}"
    return line + speed


def expression_problem(expression: str, flag: str) -> str | None:
    """pytest's own message for a `-k` or `-m` expression it cannot parse ("Wrong expression passed
    to '-k': tiny_llama and: at column 15: ..."), None for one it can. pytest's parser is a private
    helper (pytest 8 and 9): without it every expression passes here, and pytest refuses it later."""
    try:
        from _pytest.mark import _parse_expression
    except ImportError:
        return None
    try:
        _parse_expression(expression, f"Wrong expression passed to '{flag}'")
    except Exception as exc:  # pytest's UsageError
        return str(exc)
    return None


def estimate_selects(keyword: str, profile: str, case: Any) -> bool:
    """Whether ``pytest conformance -k keyword`` selects the row's ``test_estimate`` check (an empty
    expression, as pytest reads it, selects every row)."""
    if not keyword.strip():
        return True
    return _matches(keyword, [f"test_estimate[{profile}:{case.id}]".lower(), *_MODULE_NAMES])


def _elsewhere(
    keyword: str, others: Mapping[str, list[Any]], chosen: Sequence[str], defaults: Collection[str]
) -> str | None:
    """Which of the folder's other profiles have rows that ``keyword`` selects, and the ``--profile``
    that checks them (None: none has)."""
    found = {name: n for name, rows in others.items() if (n := _selected(keyword, name, rows))}
    if not found:
        return None
    has = ", ".join(f"profile {name} has {n}" for name, n in found.items())
    add = "add " + " ".join(f"--profile {name}" for name in found)
    drop = " ".join(f"--profile {name}" for name in chosen)
    return f"{has}: {f'drop {drop} or {add}' if chosen and set(found) <= set(defaults) else add}"


def _written(name: str, keyword: str) -> bool:
    return re.search(_word(name), keyword, flags=re.IGNORECASE) is not None


def _fixed(keyword: str, fixes: dict[str, str]) -> str:
    """``keyword`` with each word of ``fixes`` written as its fix."""
    for wrong, right in fixes.items():
        keyword = re.sub(_word(wrong), right, keyword, flags=re.IGNORECASE)
    return keyword


def _word(name: str) -> str:
    """A pattern for ``name`` as a whole word of a `-k` expression."""
    return rf"(?<![\w-]){re.escape(name)}(?![\w-])"


def _parts_hint(keyword: str, cases: list[Any], known: list[Any], listing: str, given: str) -> tuple[str, str | None]:
    """Name the words of ``keyword`` that no row id of ``known`` (the folder's rows) contains, with
    the id parts each resembles, and the fixed expression when each is one part but for its
    separators or their order (``nf4dq``, ``llama_tiny``); else say how ``cases``' ids are made
    and of which parts (and no fixed expression). The text follows "selects no row: ", which names
    the expression ``given``: a word that is all of it, too long to show whole, is "it" there."""
    parts = {kind: sorted({v for v in map(read, cases) if v}, key=_natural) for kind, read in _PARTS}
    unknown = _unknown_words(keyword, known)
    every = sorted({v for c in known for _, read in _PARTS if (v := read(c))}, key=_natural)
    fixes: dict[str, str] = {}
    named = []
    for word in unknown:
        same = [p for p in every if _bare(p) == _bare(word) or _pieces(p) == _pieces(word)]
        if len(same) == 1:
            fixes[word] = same[0]
        near = same or _nearest(word, every)
        name = "it" if word == given.strip() and _shown(word) != repr(word) else _shown(word)
        named.append(name + (f" (like {_or(near)})" if near else ""))
    made = "; ".join(f"{kind} {', '.join(values)}" for kind, values in parts.items() if values)
    shape = f"row ids are workload-[method-]model-quantization-[mbN-]Ngpu, of {made} ({listing} lists every id)"
    if unknown and len(fixes) == len(unknown):
        return f"no row id contains {_and(named)}", _fixed(keyword, fixes)
    if unknown:
        return f"no row id contains {_and(named)}; {shape}", None
    return f"each of its words is in some row id, none matches it whole; {shape}", None


def _shown(text: str) -> str:
    """``text`` quoted, cut short: an expression (one word of it) may be 100,000 characters, and
    the hint is one line. Before, it gave such a word whole, twice. An expression of a few checks'
    whole names (``test_run[a100-sxm4-40gb:finetune-lora-llama2_7b-nf4_dq-mb1-1gpu]``) is shown whole."""
    return quoted(text, SHOWN_EXPRESSION)


def _unknown_words(keyword: str, known: list[Any]) -> list[str]:
    """The words of ``keyword`` that a selected row must contain and no row of ``known`` does."""
    haystack = [name for c in known for name in _names(c.profile, c)]
    return [w for w in dict.fromkeys(_required_words(keyword)) if not any(w.lower() in text for text in haystack)]


def _names(profile: str, case: Any) -> list[str]:
    """What -k matches a row's checks by: their names (``test_run[cpu-tiny:<id>]``) and the module's."""
    return [f"{check}[{profile}:{case.id}]".lower() for check, kind in CHECKS.items() if applies(kind, case)] + list(
        _MODULE_NAMES
    )


def _selected(keyword: str, profile: str, cases: Iterable[Any]) -> int:
    """How many rows of ``profile`` the `-k` expression ``keyword`` selects a check of."""
    return sum(_matches(keyword, _names(profile, c)) for c in cases)


def _matches(keyword: str, names: list[str]) -> bool:
    """Whether ``keyword`` selects a test with ``names``, as pytest's -k reads it: ``or``, ``and``,
    ``not`` and parentheses over words, each true when some name contains it (case-insensitive)."""
    tokens = re.findall(r"\(|\)|[^\s()]+", keyword)
    at = 0

    def chain(word: str, operand: Callable[[], bool], combine: Callable[[bool, bool], bool]) -> bool:
        """``operand (word operand)*``: every operand is read, whatever the ones before it gave."""
        nonlocal at
        value = operand()
        while at < len(tokens) and tokens[at] == word:
            at += 1
            value = combine(value, operand())
        return value

    def either() -> bool:  # a or b
        return chain("or", both, lambda a, b: a or b)

    def both() -> bool:  # a and b
        return chain("and", negation, lambda a, b: a and b)

    def negation() -> bool:
        nonlocal at
        token = tokens[at]
        at += 1
        if token == "not":
            return not negation()
        if token == "(":
            value = either()
            at += 1  # ")"
            return value
        return any(token.lower() in name for name in names)

    try:
        return either() and at == len(tokens)
    except IndexError:  # not an expression pytest accepts: it said so before any hint
        return False


def _nearest(word: str, parts: list[str]) -> list[str]:
    """Up to three id parts that ``word`` resembles, the closest first ('tiny_lama': 'tiny_llama'
    before 'tiny_falcon'), equally close ones in their natural order."""
    near = difflib.get_close_matches(word.lower(), parts, n=3, cutoff=0.6)
    closeness = {p: difflib.SequenceMatcher(None, word.lower(), p).ratio() for p in near}
    return sorted(near, key=lambda p: (-closeness[p], _natural(p)))


def _required_words(keyword: str) -> list[str]:
    """The words of ``keyword`` a selected row must contain: not those under an odd number of
    ``not`` (``not mb8``, ``not (lora or nf4dq)``), which it must lack."""
    negated, pending, words = [False], False, []
    for token in re.findall(r"\(|\)|[^\s()]+", keyword):
        if token.lower() == "not":
            pending = not pending
        elif token == "(":
            negated.append(negated[-1] != pending)
            pending = False
        elif token == ")":
            if len(negated) > 1:
                negated.pop()
        elif token.lower() in _OPERATORS:
            pending = False
        else:
            if negated[-1] == pending:  # (neither, or both: a double negation)
                words.append(token)
            pending = False
    return words


def _bare(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def _pieces(word: str) -> list[str]:
    """``llama_tiny`` and ``tiny_llama``: the same pieces in another order."""
    return sorted(p for p in re.split(r"[^a-z0-9]+", word.lower()) if p)


def _natural(text: str) -> tuple[Any, ...]:
    """``mb2`` before ``mb16``, ``2gpu`` before ``16gpu``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _or(values: list[str]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _and(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} and {values[-1]}"
