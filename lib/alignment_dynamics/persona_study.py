"""The sections of `book/persona_data.md` as functions returning result objects.

Each function computes one section of the chapter (the dataset's counts, the label confidence, the
preference pairs, the tokens, the split, the logit identity, the embedding demo, the reference margins,
benchmark P1, the claims) and returns a frozen dataclass: numbers, strings, tables and the generated
sentences that state the section's result. The chapter's cells only call them, glue the fields
(:func:`alignment_dynamics.book.glue_result`) and plot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import data, embed, models
from .validate import InputError

# The behaviours the official code and the paper's figure captions name, by official index [official code].
NAMED_ROLES: dict[int, str] = {
    108: "Behavior 1 of the five-behaviour plots", 84: "Behavior 2; the misalignment runs",
    88: "Behavior 3", 54: "Behavior 4", 100: "Behavior 5", 0: "Figure 5(a)", 96: "Figure 5(a)",
    51: "Figure 5(b)", 104: "Figure 5(b)", 87: "Figure 1", 130: "UMAP before vs after DPO",
}
# The official indices of the two behaviours whose order a case-folding sort would swap [official code].
OFFICIAL_INDEX = {"subscribes-to-Buddhism": 100, "subscribes-to-average-utilitarianism": 108}
FULL_FILE = 1000              # records of a complete persona file
CONFIDENCE_FLOOR = 0.5        # a preference model's own label has probability >= 1/2 of being right
CONFIDENCE_HIGH = 0.9         # the "confident" share reported in the prose
LOGIT_TOL = 1e-3              # |h W_U^T - logits| below this: the identity holds (float32 rounding is ~1e-5)
LOGIT_OFF = 1.0               # above this: the features are not the logits' features
SECOND_PAIR_INDEX = (0, 96)   # Figure 5(a)'s pair: the second member's split as part of a pair


def _verdict(ok: bool) -> str:
    """The verdict of an exact claim (an index, a count, a token): "agrees" when it holds, else "differs"."""
    return "agrees" if ok else "differs"


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSummary:
    """Counts of the persona data: one row per behaviour in ``table`` (:func:`data.persona_table`),
    the files with fewer than :data:`FULL_FILE` records in ``short_files``, and ``balanced_text``, the
    generated sentence on the class balance."""

    fingerprint: str
    n_behaviors: int
    n_records: int
    n_full: int
    n_balanced: int
    min_records: int
    balanced_text: str
    table: Any = field(repr=False)
    short_files: Any = field(repr=False)


def balance_text(n_balanced: int, n_behaviors: int) -> str:
    """The sentence on the class balance of ``n_balanced`` of ``n_behaviors`` files."""
    if n_balanced == n_behaviors:
        return "a classifier that always answers \" Yes\" is therefore right half the time in every behaviour"
    return (f"in the other {n_behaviors - n_balanced} a classifier that always answers \" Yes\" is not right "
            "exactly half the time")


def dataset_summary() -> DatasetSummary:
    """The dataset's counts and the table of the incomplete files (mean label confidence to 3 places)."""
    table = data.persona_table()
    n, balanced = len(table), int((table["positive"] == table["negative"]).sum())
    short = table[table["records"] < FULL_FILE].set_index("index").round({"mean_label_confidence": 3})
    return DatasetSummary(
        fingerprint=data.fingerprint("anthropic-persona")[:16], n_behaviors=n,
        n_records=int(table["records"].sum()), n_full=int((table["records"] == FULL_FILE).sum()),
        n_balanced=balanced, min_records=int(table["records"].min()),
        balanced_text=balance_text(balanced, n), table=table, short_files=short)


@dataclass(frozen=True)
class NamedBehaviors:
    """Where the named behaviours sit in our sorted list, and whether that is the official order."""

    index_buddhism: int
    index_average_util: int
    official_order: bool
    order_text: str
    table: Any = field(repr=False)


def named_behaviors(summary: DatasetSummary, roles: Mapping[int, str] = NAMED_ROLES) -> NamedBehaviors:
    """The rows of ``summary.table`` for the behaviours of ``roles`` (official index -> role), with a
    ``role`` column, and the positions of the two behaviours a case-folding sort would swap."""
    names = data.behaviors()
    bad = sorted(i for i in roles if not 0 <= i < len(names))
    if bad:
        raise InputError(f"behaviour indices {bad} are out of range: there are {len(names)} behaviours (0..{len(names) - 1})")
    idx = {b: names.index(b) for b in OFFICIAL_INDEX}
    ok = idx == OFFICIAL_INDEX
    b, a = idx["subscribes-to-Buddhism"], idx["subscribes-to-average-utilitarianism"]
    text = (f"with ours subscribes-to-Buddhism is at index {b} and subscribes-to-average-utilitarianism at {a}, "
            + ("the indices the official code uses for them" if ok else
               "not the indices the official code uses for them (100 and 108)"))
    keys = sorted(roles)
    table = summary.table.set_index("index").loc[keys, ["behavior", "records", "positive", "negative", "train", "test"]]
    return NamedBehaviors(b, a, ok, text, table.assign(role=[roles[i] for i in keys]))


# ---------------------------------------------------------------------------------------------------
# Label confidence and examples
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelConfidence:
    """The label confidence of every statement, by class, with its summaries and generated sentences."""

    conf_min: float
    conf_median: float
    conf_above_09: float
    conf_mean_pos: float
    conf_mean_neg: float
    floor_text: str
    class_text: str
    positive: np.ndarray = field(repr=False)
    negative: np.ndarray = field(repr=False)


def confidence_texts(conf_min: float, mean_pos: float, mean_neg: float) -> tuple[str, str]:
    """The sentences on the floor (:data:`CONFIDENCE_FLOOR`) and on which class is labelled more
    confidently, from the smallest confidence and the two class means."""
    floor = ("so the floor at 0.5 holds" if conf_min >= CONFIDENCE_FLOOR else
             "so some labels fall below the floor at 0.5 that a preference model's own choice implies")
    if mean_neg > mean_pos:
        cls = "Negative statements are labelled more confidently than positive ones"
    elif mean_pos > mean_neg:
        cls = "Positive statements are labelled more confidently than negative ones"
    else:
        cls = "Positive and negative statements are labelled equally confidently"
    return floor, cls


def label_confidence(names: Sequence[str] | None = None) -> LabelConfidence:
    """Label-confidence summaries of ``names`` (default: every behaviour)."""
    pos, neg = data.label_confidence_by_class(names)
    conf = np.concatenate([pos, neg])
    if not len(pos) or not len(neg):
        raise InputError("label_confidence needs statements of both classes")
    mn, mp, mneg = float(conf.min()), float(pos.mean()), float(neg.mean())
    floor, cls = confidence_texts(mn, mp, mneg)
    return LabelConfidence(mn, float(np.median(conf)), float((conf >= CONFIDENCE_HIGH).mean()), mp, mneg,
                           floor, cls, pos, neg)


@dataclass(frozen=True)
class Examples:
    """The statements shown as Figure 1: ``positive`` and ``negative``, drawn with ``seed``."""

    seed: int
    positive: list
    negative: list


def examples(cfg) -> Examples:
    """``cfg.n_examples`` statements of each class of ``cfg.behavior`` (:func:`data.example_statements`)."""
    pos, neg = data.example_statements(cfg.behavior, cfg.n_examples, seed=cfg.seed)
    return Examples(cfg.seed, pos, neg)


# ---------------------------------------------------------------------------------------------------
# Pairs and tokens
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairDemo:
    """The first statement of a behaviour as a preference pair, aligned and flipped, and as text."""

    pair: Any
    flipped: Any
    text: str


def pair_demo(behavior: str) -> PairDemo:
    """The pair of statement 0 of ``behavior`` in both directions, printed as the chapter shows it."""
    pair = data.persona_pairs(behavior, [0])[0]
    flipped = data.persona_pairs(behavior, [0], flip=True)[0]
    lines = [f"prompt:   {pair.prompt!r}"]
    lines += [f"{name:6s}   chosen {p.chosen!r}, rejected {p.rejected!r}, label s = {p.label:+d}"
              for name, p in (("align", pair), ("flip", flipped))]
    return PairDemo(pair, flipped, "\n".join(lines))


@dataclass(frozen=True)
class TokenSummary:
    """Per model: the answer ids and the prompt lengths over a stratified sample of every behaviour."""

    n_token_prompts: int
    mean_tokens: float
    single_tokens: bool
    ids_text: str
    tokens_text: str
    first_tokens: str
    rows: list = field(repr=False)
    table: Any = field(repr=False)


def token_summary(cfg, prompt: str) -> TokenSummary:
    """Token counts of ``cfg.tokens_per_class`` prompts per class of every behaviour for each of
    ``cfg.models`` (loaded with ``dtype="auto"``), their answer ids, and how the first model reads ``prompt``."""
    lms = {m: models.shared(m, dtype="auto") for m in cfg.models}
    prompts = [p.prompt for b in data.behaviors()
               for p in data.persona_pairs(b, data.stratified_sample(b, cfg.tokens_per_class, seed=cfg.seed))]
    rows = []
    for m, lm in lms.items():
        counts = lm.token_counts(prompts)
        yes, no = lm.answer_token_ids()
        rows.append({"model": m, '" Yes" id': yes, '" No" id': no,
                     "answer tokens": " / ".join(lm.tokenizer.convert_ids_to_tokens([yes, no])),
                     "prompt tokens (mean)": counts.mean(), "min": counts.min(), "max": counts.max(),
                     "vocabulary": lm.vocab_size, "d": lm.d_model})
    single = all(len(lm.answer_ids) == 2 for lm in lms.values())
    ids = "; ".join(f"{m}: {lm.answer_token_ids()[0]} / {lm.answer_token_ids()[1]}" for m, lm in lms.items())
    text = ("Both answers are single tokens for each model" if single else
            "Not every model encodes both answers as single tokens")
    first = next(iter(lms.values()))
    import pandas as pd

    table = pd.DataFrame(rows).style.hide(axis="index").format({"prompt tokens (mean)": "{:.1f}"})
    return TokenSummary(len(prompts), float(rows[0]["prompt tokens (mean)"]), single, ids, text,
                        f"{first.name} {first.tokens(prompt)}", rows, table)


# ---------------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitDemo:
    """The official split of a behaviour, and a behaviour's split alone against as a pair's second."""

    n_train: int
    n_test: int
    test_overlap: int
    n_test_b: int
    second: str
    table: Any = field(repr=False)


def split_demo(behavior: str, *, seed: int, pair: tuple[int, int] = SECOND_PAIR_INDEX) -> SplitDemo:
    """``behavior``'s split, and the split of the second behaviour of ``pair`` (official indices) alone
    and as the second of the two-behaviour stream (:func:`data.two_behavior_split`)."""
    import pandas as pd

    names = data.behaviors()
    a_name, b_name = names[pair[0]], names[pair[1]]
    split = data.persona_split(behavior, seed=seed)
    _, b_two = data.two_behavior_split(a_name, b_name, seed=seed)
    b_one = data.persona_split(b_name, seed=seed)
    table = pd.DataFrame({"behaviour": [behavior, f"{b_name} (alone)", f"{b_name} (second of a pair)"],
                          "train": [len(split.train), len(b_one.train), len(b_two.train)],
                          "test": [len(split.test), len(b_one.test), len(b_two.test)],
                          "first test indices": [split.test[:5], b_one.test[:5], b_two.test[:5]]})
    return SplitDemo(len(split.train), len(split.test), len(set(b_two.test) & set(b_one.test)), len(b_one.test),
                     b_name, table)


# ---------------------------------------------------------------------------------------------------
# Embeddings: the logit identity, the demo, the reference margins
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogitCheck:
    """max |h W_Uᵀ − logits| over the models with one normalisation (``logit_gap``) and the minimum of
    the same with the official two (``logit_gap_double``); float32 rounding, so both are volatile."""

    logit_gap: float
    logit_gap_double: float
    identity_holds: bool
    double_differs: bool
    logit_text: str
    table: Any = field(repr=False)


def logit_reading(gap: float, gap_double: float) -> str:
    """The generated reading of the logit check against :data:`LOGIT_TOL` and :data:`LOGIT_OFF`."""
    one = ("our h reproduces the logits" if gap < LOGIT_TOL else
           f"even our h misses the logits by {LOGIT_TOL:g} or more")
    two = ("those features are not the ones that produce the logits" if gap_double > LOGIT_OFF else
           "the doubly normalised features come close to the logits here")
    return f"{one}; {two}"


def logit_check(cfg) -> LogitCheck:
    """:func:`embed.logit_gap` of ``cfg.check_per_class`` statements per class of ``cfg.behavior`` on
    each of ``cfg.models`` in float32."""
    import pandas as pd

    prompts = [p.prompt for p in data.persona_pairs(cfg.behavior, data.stratified_sample(
        cfg.behavior, cfg.check_per_class, seed=cfg.seed))]
    gaps = {m: embed.logit_gap(models.shared(m, dtype="float32"), prompts) for m in cfg.models}
    gap = max(g["model"].max() for g in gaps.values())
    double = min(g["double"].min() for g in gaps.values())
    table = pd.DataFrame({"model": list(gaps),
                          "max |h W_Uᵀ - logits|, norm='model'": [g["model"].max() for g in gaps.values()],
                          "min of the same, norm='double'": [g["double"].min() for g in gaps.values()]})
    return LogitCheck(float(gap), float(double), bool(gap < LOGIT_TOL), bool(double > LOGIT_OFF),
                      logit_reading(gap, double), table)


@dataclass(frozen=True)
class EmbedDemo:
    """The embedding demo: the first model's fresh throughput (volatile), the sample, dtype and scale
    of its h, and the rows of every model (``emb``: model -> :class:`embed.Embeddings`)."""

    demo_rate: float
    demo_n: int
    h_norm: float
    d: int
    demo_dtype: str
    emb: dict = field(repr=False)
    table: Any = field(repr=False)


def embed_demo(cfg) -> EmbedDemo:
    """Embed ``cfg.embed_per_class`` statements per class of ``cfg.behavior`` with each model: once
    fresh (timed), then twice through the cache (the second call must read every row back)."""
    import pandas as pd

    demo = data.stratified_sample(cfg.behavior, cfg.embed_per_class, seed=cfg.seed)
    prompts = [p.prompt for p in data.persona_pairs(cfg.behavior, demo)]
    rows, emb = [], {}
    for m in cfg.models:
        lm = models.shared(m, dtype="auto")
        t0 = time.perf_counter()
        embed.embed(lm, prompts, progress=False)  # fresh, not from the cache: the throughput
        rate = len(prompts) / (time.perf_counter() - t0)
        emb[m] = embed.behavior_embeddings(m, cfg.behavior, demo, progress=False)
        again = embed.behavior_embeddings(m, cfg.behavior, demo, progress=False)
        rows.append({"model": m, "dtype": emb[m].options["dtype"], "prompts": len(prompts),
                     "prompts/s (fresh)": rate, "rows from the cache on a second call": len(again) - again.computed,
                     "mean ‖h‖": np.linalg.norm(emb[m].h, axis=1).mean()})
    table = pd.DataFrame(rows).style.hide(axis="index").format({"prompts/s (fresh)": "{:.1f}", "mean ‖h‖": "{:.1f}"})
    first = rows[0]
    return EmbedDemo(float(first["prompts/s (fresh)"]), len(prompts), float(first["mean ‖h‖"]),
                     int(emb[cfg.models[0]].h.shape[1]), str(first["dtype"]), emb, table)


@dataclass(frozen=True)
class Margins:
    """The reference margin logit(" Yes") − logit(" No") by class per model (``margins``: model ->
    (positive, negative)) and each model's agreement rate with the persona (``agree``)."""

    agree_first: float
    agree: dict
    margins: dict = field(repr=False)


def agreement(margin: np.ndarray, labels: np.ndarray) -> float:
    """The share of statements whose margin has the sign of the label (±1): the reference accuracy."""
    margin, labels = np.asarray(margin), np.asarray(labels)
    if margin.shape != labels.shape or margin.ndim != 1 or not len(margin):
        raise InputError(f"agreement needs two non-empty 1-d arrays of one length, got {margin.shape} and {labels.shape}")
    return float(np.mean(np.sign(margin) == labels))


def reference_margins(cfg, demo: EmbedDemo) -> Margins:
    """The margins of the demo's rows under each model's reference head (``dtype="auto"``)."""
    margins, agree = {}, {}
    for m in cfg.models:
        e = demo.emb[m]
        mg = models.shared(m, dtype="auto").answer_margin(e.h)
        margins[m] = (mg[e.positive], mg[~e.positive])
        agree[m] = agreement(mg, e.labels)
    return Margins(agree[cfg.models[0]], agree, margins)


# ---------------------------------------------------------------------------------------------------
# Benchmark P1
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbedBenchmark:
    """Benchmark P1 of the first benchmarked model (all but the dtype machine-dependent) and the report
    of every benchmarked model."""

    bench_official: float
    bench_ours: float
    bench_ratio: float
    bench_ratio_fp32: float
    bench_flop_fraction: float
    bench_dtype: str
    bench_reading: str
    report: str
    results: dict = field(repr=False)


VOLATILE_BENCH = ("bench_official", "bench_ours", "bench_ratio", "bench_ratio_fp32", "bench_flop_fraction",
                  "bench_reading")


def embed_benchmark(cfg) -> EmbedBenchmark:
    """Run :func:`alignment_dynamics.bench.embed.run` with ``cfg.bench`` on each of ``cfg.bench_models``."""
    from .bench import embed as bench_embed

    res = {m: bench_embed.run(m, **cfg.bench) for m in cfg.bench_models}
    first = res[cfg.bench_models[0]]
    return EmbedBenchmark(first["official_prompts_per_s"], first["ours_prompts_per_s"], first["ratio"],
                          first["ratio_float32"], first[f"flop_fraction_{first['ours_dtype']}"], first["ours_dtype"],
                          bench_embed.goal_reading(first), "\n".join(bench_embed.report(r) for r in res.values()), res)


# ---------------------------------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------------------------------

def record_claims(cfg, summary: DatasetSummary, named: NamedBehaviors, shown: Examples, tokens: TokenSummary,
                  logits: LogitCheck) -> list[dict]:
    """Record the chapter's claim rows (:func:`alignment_dynamics.book.claim`); each verdict is exact:
    "agrees" when the measurement equals what the claim implies, else "differs"."""
    from . import book

    by_name = summary.table.set_index("behavior")
    n_pos, n_neg = len(shown.positive), len(shown.negative)
    rows = [
        book.claim("The official code lists the 135 behaviours in code-point order (Buddhism 100, average-utilitarianism 108)",
                   f"{summary.n_behaviors} behaviours; Buddhism at {named.index_buddhism}, average-utilitarianism at "
                   f"{named.index_average_util}", _verdict(named.official_order and summary.n_behaviors == 135),
                   source="official code"),
        book.claim("Every behaviour file is balanced between positive and negative statements",
                   f"{summary.n_balanced} of {summary.n_behaviors} files exactly balanced",
                   _verdict(summary.n_balanced == summary.n_behaviors), source="project"),
        book.claim(f"Figure 1: the data has positive and negative statements for '{cfg.behavior}'",
                   f"{int(by_name.loc[cfg.behavior, 'positive'])} positive and "
                   f"{int(by_name.loc[cfg.behavior, 'negative'])} negative statements; "
                   f"{n_pos} + {n_neg} shown", _verdict(bool(n_pos and n_neg))),
        book.claim("The answers ' Yes' / ' No' are single tokens (ids hard-coded for Llama-2)",
                   f"single tokens on our models ({tokens.ids_text})", _verdict(tokens.single_tokens),
                   source="official code"),
        book.claim("hidden_states[-1] is already normalised, so the official second RMSNorm changes the features",
                   f"max |h W_Uᵀ - logits| {'<' if logits.identity_holds else '≥'} 1e-3 with one norm, "
                   f"{'>' if logits.double_differs else '≤'} 1 with two",
                   _verdict(logits.identity_holds and logits.double_differs), source="official code"),
    ]
    return rows
