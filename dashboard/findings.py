"""The Findings table: each claim of the paper, its number, ours from the analysis tables, a verdict.

Ours are computed over the selected tasks from pattern_shares, head_summary, metrics and
task_summary (never from per-example rows), so the Overview stays fast. Beside Sun & Marasović's
claims: Kobayashi et al.'s (2020) claim about norm-weighting, what the project-defined
efficient attention shows (no paper claim, so its rows are "context"), and Pascual et al.'s
(2021) claims about attention vs gradient attribution (attribution_summary, influence_summary;
no rows when the attribute stage has not run), and Meister et al.'s (2021) claims about sparse
attention, answered across the runs that differ only in their attention map (sparse_views; no
rows without such runs).
"""

from __future__ import annotations

import polars as pl

from dashboard import attribution_views, data, kinds, paper, sparse_views
from dashboard.data import Run
from dashboard.share_views import mean_difference, pattern_verdict

HOLDS, FAILS, OPEN, CONTEXT = "holds", "does not hold", "not computed yet", "context"
_COLUMNS = {"claim": pl.String, "paper": pl.String, "ours": pl.String, "verdict": pl.String}
CLS_MEASURES = ("cls_row_sep", "cls_row_punct", "cls_row_cls")
# the [CLS] query row's weight per token type (the paper's Fig. 1), in the Token types page's order
TOKEN_TYPES = {"cls_row_noun": "NOUN", "cls_row_pron": "PRON", "cls_row_verb": "VERB",
               "cls_row_sep": "[SEP]", "cls_row_cls": "[CLS]", "cls_row_punct": "PUNCT"}
# Kobayashi et al.'s tokens: the whole-map weight on each key column, averaged over queries
NORM_MEASURES = {"sep_weight": "[SEP]", "punct_weight": "punctuation", "cls_weight": "[CLS]"}
KOBAYASHI = ("α large but ‖αf(x)‖ small for [SEP], punctuation, [CLS] (Kobayashi et al. 2020, Figs. 2–4; "
             "BERT-base, Wikipedia)")
# "loses weight with norm-weighting" = norm ≤ 0.75 × standard (mean over layers, heads and tasks):
# the paper reports no number, and a drop of a quarter or more is far beyond head-to-head noise
LOSES_WEIGHT = 0.75
# every head_summary measure the findings use, read in one go: data.read caches per predicate,
# so one read of the union is one scan on a cold cache where one read per claim would be several
_SUMMARY_MEASURES = (*CLS_MEASURES, "pretrained_cosine", *NORM_MEASURES, "support_share")
TIME_METRICS = ("eval_seconds", "examples_per_second")
PASCUAL = "Pascual et al. 2021 (abstract, no number); attribution by Meister et al.'s recipe (project-chosen)"
# "attention differs markedly from attribution" holds when, over layers, heads and tasks, standard
# attention's largest key is the attribution row's largest input token for fewer than half the queries
DIFFERS_TOP1 = 0.5
# a pattern-share change "holds" outright when it is at least half the paper's change in the same
# direction; smaller ones say "direction holds" with their size beside the paper's
SAME_SIZE = 0.5


def read_head_summary(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """The head_summary rows of every measure the findings use, all layers."""
    return data.read(run, "head_summary", tasks=tasks, measure=_SUMMARY_MEASURES)


def final_cls_row(run: Run, summary: pl.DataFrame) -> pl.DataFrame:
    """The [CLS]-row measures of the final layer, the layer the paper's Fig. 1 shows."""
    return summary.filter((pl.col("layer") == run.n_layers - 1) & pl.col("measure").is_in(CLS_MEASURES))


def layer_head_means(summary: pl.DataFrame, measures: tuple[str, ...]) -> pl.DataFrame:
    """task, kind, measure, mean (over layers and heads), n (examples behind it: the largest head n)."""
    return (summary.filter(pl.col("measure").is_in(measures))
            .group_by("task", "kind", "measure", maintain_order=True).agg(pl.col("mean").mean(), pl.col("n").max()))


def eval_times(metrics: pl.DataFrame, tasks: tuple[str, ...]) -> pl.DataFrame:
    """One row per task of ``tasks``, in order: n_examples, {kind}_eval_seconds,
    {kind}_examples_per_second and ratio (effective / standard seconds); null where missing."""
    timed = metrics.filter(pl.col("metric").is_in(TIME_METRICS))
    wide = (timed.with_columns(pl.concat_str("kind", pl.lit("_"), "metric").alias("kind_metric"))
            .pivot(on="kind_metric", index="task", values="value", aggregate_function="first"))
    n_examples = timed.group_by("task", maintain_order=True).agg(pl.col("n_examples").first())
    wanted = [f"{kind}_{metric}" for kind in ("standard", "effective") for metric in TIME_METRICS]
    table = (pl.DataFrame({"task": list(tasks)}, schema={"task": pl.String})
             .join(n_examples, on="task", how="left", maintain_order="left")
             .join(wide, on="task", how="left", maintain_order="left")
             .with_columns(pl.lit(None, pl.Float64).alias(name) for name in wanted if name not in wide.columns))
    standard, effective = pl.col("standard_eval_seconds"), pl.col("effective_eval_seconds")
    # a zero time is no measurement: no ratio rather than inf
    ratio = pl.when((standard != 0) & (effective != 0)).then(effective / standard)
    return table.select("task", "n_examples", *wanted, ratio.alias("ratio"))


def _row(claim: str, paper_text: str, ours: str, verdict: str) -> dict:
    return {"claim": claim, "paper": paper_text, "ours": ours, "verdict": verdict}


def size_verdict(ours_change: float, paper_change: float) -> str:
    """HOLDS when our change goes the paper's way at half its size or more; "direction holds, size
    1/20 of the paper's" when it goes that way but smaller; FAILS when it goes the other way."""
    if paper_change == 0 or ours_change * paper_change <= 0:
        return FAILS
    ratio = ours_change / paper_change
    if ratio >= SAME_SIZE:
        return HOLDS
    return f"direction holds, size 1/{round(1 / ratio)} of the paper's"


def _patterns(shares: pl.DataFrame, tasks: tuple[str, ...]) -> list[dict]:
    rows = []
    compared = paper.table2_tasks(tasks)  # the paper's numbers over the same tasks as ours
    for pattern, fewer in (("vertical", True), ("block", False)):
        claim = f"Effective attention shows {'fewer' if fewer else 'more'} {pattern} patterns"
        theirs = {kind: paper.table2_mean(kind, pattern, compared) for kind in ("standard", "effective")}
        paper_text = (f"{theirs['standard']:.1%} → {theirs['effective']:.1%} (mean of "
                      f"{', '.join(map(paper.task_label, compared))})")
        mean = {kind: shares.filter(kind=kind, pattern=pattern)["share"].mean() for kind in ("standard", "effective")}
        if shares.is_empty() or None in mean.values():
            rows.append(_row(claim, paper_text, "patterns not classified yet", OPEN))
            continue
        combined = mean_difference(shares, pattern)
        if combined is not None:  # corrected for the classifier's errors, with a 95 % interval
            diff, low, high = combined
            rows.append(_row(claim, paper_text,
                             f"{mean['standard']:.1%} → {mean['effective']:.1%} (mean of {len(tasks)} tasks); corrected "
                             f"difference {100 * diff:+.1f} points (95 % {100 * low:+.1f} to {100 * high:+.1f})",
                             pattern_verdict(low, high, theirs["effective"] - theirs["standard"])))
            continue
        rows.append(_row(claim, paper_text, f"{mean['standard']:.1%} → {mean['effective']:.1%} (mean of {len(tasks)} tasks)",
                         size_verdict(mean["effective"] - mean["standard"], theirs["effective"] - theirs["standard"])))
    return rows


def _cls_row(run: Run, head_summary: pl.DataFrame) -> list[dict]:
    last = run.n_layers - 1
    summary = final_cls_row(run, head_summary)
    rows = []
    for measure, label, loses in (("cls_row_sep", "[SEP]", True), ("cls_row_punct", "punctuation", True),
                                  ("cls_row_cls", "[CLS]", False)):
        claim = f"Final-layer [CLS] row: {label} {'loses weight' if loses else 'keeps its weight'} with effective attention"
        paper_text = "lower with effective (Fig. 1; all tasks but SST-2 for [SEP])" if loses else "about the same (Fig. 1)"
        mean = {kind: summary.filter(kind=kind, measure=measure)["mean"].mean() for kind in ("standard", "effective")}
        if None in mean.values():
            rows.append(_row(claim, paper_text, "no head_summary rows", OPEN))
            continue
        change = mean["effective"] - mean["standard"]
        relative = abs(change) / max(abs(mean["standard"]), 1e-9)
        ok = change < 0 if loses else relative <= 0.25  # "about the same": within 25 % of standard
        rows.append(_row(claim, paper_text, f"{mean['standard']:.3f} → {mean['effective']:.3f} (layer {last}, mean over heads and tasks)",
                         HOLDS if ok else FAILS))
    return rows


def _finetuning(run: Run, head_summary: pl.DataFrame) -> list[dict]:
    summary = head_summary.filter(measure="pretrained_cosine")
    claim = "The last two layers change most with finetuning (lowest cosine to pretrained)"
    if summary.is_empty():
        return [_row(claim, "yes, both kinds (Fig. 3)", "no pretrained_cosine rows", OPEN)]
    last_two = {run.n_layers - 2, run.n_layers - 1}
    parts, ok = [], True
    for kind in ("standard", "effective"):
        per_layer = (summary.filter(kind=kind).group_by("layer").agg(pl.col("mean").mean())
                     .sort("mean"))
        lowest = per_layer["layer"].head(2).to_list()
        ok = ok and set(lowest) == last_two
        parts.append(f"{kind}: layers {', '.join(map(str, sorted(lowest)))}")
    return [_row(claim, "yes, both kinds (Fig. 3)", "lowest: " + "; ".join(parts), HOLDS if ok else FAILS)]


def _cost(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    # all metrics, filtered here: the Overview's dev-metrics read has the same cache key
    metrics = data.read(run, "metrics", tasks=tasks)
    claim = "Effective attention costs about 2× the evaluation time"
    ratios = eval_times(metrics, tasks)["ratio"].drop_nulls()
    if ratios.is_empty():
        return [_row(claim, "1.92–2.03× (Table 3)", "no eval_seconds rows", OPEN)]
    ours = f"{ratios.min():.2f}–{ratios.max():.2f}× ({len(ratios)} tasks)"
    return [_row(claim, "1.92–2.03× (Table 3)", ours, HOLDS if 1.5 <= ratios.mean() <= 2.5 else FAILS)]


def _norm_weighting(head_summary: pl.DataFrame) -> list[dict]:
    means = layer_head_means(head_summary, tuple(NORM_MEASURES))
    rows = []
    for measure, token in NORM_MEASURES.items():
        claim = f"With norm-weighting, {token} carries little weight (Kobayashi et al. 2020)"
        mean = {kind: means.filter(kind=kind, measure=measure)["mean"].mean() for kind in ("standard", "norm")}
        if None in mean.values():
            rows.append(_row(claim, KOBAYASHI, f"no {measure} rows of both kinds in head_summary", OPEN))
            continue
        ours = f"{mean['standard']:.3f} → {mean['norm']:.3f} (standard → norm-weighted, mean over layers, heads and tasks)"
        rows.append(_row(claim, KOBAYASHI, ours, HOLDS if mean["norm"] <= LOSES_WEIGHT * mean["standard"] else FAILS))
    return rows


def _efficient(run: Run, head_summary: pl.DataFrame, shares: pl.DataFrame, tasks: tuple[str, ...]) -> list[dict]:
    """What efficient attention (project-defined) shows beside standard, on its sample; no paper claim."""
    name, k = f"Efficient attention{kinds.PROJECT_MARK} (project-defined)", kinds.efficient_examples(run)
    paper_text = "no paper claim (after Naim & Asher 2024; support at most (rank + 1)/n by construction)"
    support = layer_head_means(head_summary, ("support_share",))
    mean = {kind: support.filter(kind=kind)["mean"].mean() for kind in ("standard", "efficient")}
    n = support.filter(kind="efficient")["n"].sum()  # examples per task, summed over tasks
    claim = f"{name}: mean share of keys with a non-zero weight"
    sample = f"{n} examples" + (f", the first {k} per task" if k is not None else "")
    rows = [_row(claim, paper_text, "no support_share rows of both kinds", OPEN) if None in mean.values() else
            _row(claim, paper_text, f"{mean['standard']:.3f} → {mean['efficient']:.3f} (standard → efficient, {sample})",
                 CONTEXT)]
    vertical = shares.filter(pattern="vertical")
    share = {kind: vertical.filter(kind=kind)["share"].mean() for kind in ("standard", "efficient")}
    claim = f"{name}: share of vertical patterns"
    if None in share.values():
        return [*rows, _row(claim, "no paper claim", "patterns of both kinds not classified yet", OPEN)]
    n_maps = vertical.filter(kind="efficient")["n_maps"].sum()
    ours = (f"{share['standard']:.1%} → {share['efficient']:.1%} (standard → efficient, mean of {len(tasks)} tasks; "
            f"efficient on {n_maps} maps of its sample)")
    return [*rows, _row(claim, "no paper claim", ours, CONTEXT)]


def _short_inputs(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    summary = data.read(run, "task_summary", tasks=tasks)
    if summary.is_empty():
        return []
    d_head = summary["d_head"].max()
    per_task = ", ".join(f"{paper.task_label(t)} {s:.0%}" for t, s in summary.select("task", "share_le_d_head").iter_rows())
    return [_row(f"Share of examples with n ≤ d_head = {d_head} (effective = standard there)",
                 "d_head 64, few GLUE inputs that short", per_task, CONTEXT)]


def _attribution(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    """Pascual et al.'s claims in numbers of attribution_summary, and which kind agrees best (ours)."""
    summary = attribution_views.read_summary(run, tasks, measure=("jsd", "top1_agreement"))
    standard = summary.filter(kind=kinds.BASE)
    if standard.is_empty():
        return []
    n = sum(attribution_views.sample_size(run, task, summary) or 0 for task in set(summary["task"]))
    on = f"{n} examples, {summary['task'].n_unique()} tasks"
    jsd, top1 = (standard.filter(measure=m)["mean"].mean() for m in ("jsd", "top1_agreement"))
    rows = [_row("Attention differs markedly from gradient attribution (mixing of context)", PASCUAL,
                 f"standard A: mean JSD {jsd:.3f}, top-1 agreement {top1:.1%} (over layers and heads; {on})",
                 HOLDS if top1 < DIFFERS_TOP1 else FAILS)]
    trend = attribution_views.trends(attribution_views.per_layer(standard, "jsd"), "jsd", (kinds.BASE,)).row(0, named=True)
    rows.append(_row("The mismatch grows with depth", PASCUAL,
                     f"standard A: Kendall τ between layer and mean JSD {trend['tau_layer']:+.2f}, slope "
                     f"{trend['slope_per_layer']:+.4f} per layer ({on})",
                     HOLDS if trend["mismatch with depth"] == "grows" else FAILS))
    rows.extend(_persisting(run, tasks))
    means = (summary.filter(measure="jsd").group_by("kind").agg(pl.col("mean").mean()).sort("mean"))
    ranking = " < ".join(f"{kinds.label(kind)} {mean:.3f}" for kind, mean in means.iter_rows())
    rows.append(_row("Which kind agrees best with attribution (our question, no paper claim)",
                     "project question; attribution by Meister et al.'s recipe (project-chosen)",
                     f"mean JSD, best first: {ranking}", CONTEXT))
    return rows


def _persisting(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    """"Some patterns persist through all layers", read as: each position's own input token keeps more
    than a uniform share (1/n) of the influence on its hidden state in every layer of every task."""
    claim = "Some patterns persist through all layers: the own token's influence stays above 1/n in every layer"
    own = data.read(run, "influence_summary", tasks=tasks, measure="own_share")
    chance = attribution_views.chance_own_share(run, tasks)
    if own.is_empty() or not chance:
        return [_row(claim, PASCUAL, "no influence_summary rows", OPEN)]
    own = own.with_columns(chance=pl.col("task").replace_strict(chance, default=None)).drop_nulls("chance")
    above = own.filter(pl.col("mean") > pl.col("chance"))
    last = own.filter(pl.col("layer") == own["layer"].max())
    ours = (f"own-token share in the last layer {last['mean'].mean():.3f} vs 1/n {last['chance'].mean():.3f}; above 1/n "
            f"in {above.height} of {own.height} task × layer cells (Meister et al.'s influence of the input tokens)")
    return [_row(claim, PASCUAL, ours, HOLDS if above.height == own.height else FAILS)]


def _listing(values: dict, fmt: str) -> str:
    return ", ".join(f"{name} {format(value, fmt)}" for name, value in values.items() if value is not None)


def model_of(run: Run) -> str:
    """The model a run was made from, as its manifest names it (model_source, else model)."""
    return str(run.manifest.get("model_source") or run.manifest.get("model") or "?")


def _sparse(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    """Meister et al.'s claims, per task with runs of two or more attention maps (on-page: Sparse
    attention), where those runs are of the run's own model (another model's runs say nothing of it)."""
    rows = []
    for comparison in [c for c in sparse_views.comparisons() if c.task in tasks
                       and all(model_of(other) == model_of(run) for other in c.runs)]:
        numbers = sparse_views.findings_numbers(comparison)
        on = f"{paper.task_label(comparison.task)}, MiniLM fine-tuned with each map"
        entropy = {k: v for k, v in numbers["entropy"].items() if v is not None}
        if entropy:
            rows.append(_row("Input influence on intermediate representations stays dispersed, sparse or not",
                             f"normalised entropy 0.46–0.93; SST softmax {sparse_views.THEIRS['entropy_softmax']}, "
                             f"sparsemax {sparse_views.THEIRS['entropy_sparsemax']} ({sparse_views.MEISTER}, Table 1)", f"mean normalised entropy: {_listing(entropy, '.2f')} ({on})",
                             HOLDS if min(entropy.values()) >= sparse_views.DISPERSED else FAILS))
        if numbers["tau_sweep"] is not None and numbers["n_lambdas"] >= 2:
            tau = numbers["tau_sweep"]
            rows.append(_row("The sparser the attention (larger λ), the lower the input-influence entropy",
                             f"Kendall τ(λ, entropy) {sparse_views.THEIRS['tau_lambda_entropy']} ({sparse_views.MEISTER}, Table 2)",
                             f"τ {tau:+.2f} over {numbers['n_lambdas']} λ values × examples ({on})",
                             HOLDS if tau < 0 else FAILS))
        pairs = {a: (numbers["intermediate"][a], numbers["input"][a]) for a in comparison.attentions
                 if numbers["intermediate"][a] is not None and numbers["input"][a] is not None}
        if pairs:
            rows.append(_row("Attention agrees better with the importance of intermediate states than of the inputs",
                             f"{sparse_views.MEISTER}, Table 6",
                             "[CLS] rows, Kendall τ intermediate vs input gradient: "
                             + ", ".join(f"{a} {mid:+.2f} vs {inp:+.2f}" for a, (mid, inp) in pairs.items()) + f" ({on})",
                             HOLDS if all(mid > inp for mid, inp in pairs.values()) else FAILS))
        softmax, sparse = numbers["input"].get(sparse_views.SOFTMAX), numbers["input"].get("sparsemax")
        if softmax is not None and sparse is not None:
            rows.append(_row("Sparsemax lowers attention's agreement with input-gradient importance",
                             f"τ {sparse_views.THEIRS['tau_input_gradient_softmax']} → "
                             f"{sparse_views.THEIRS['tau_input_gradient_sparsemax']} ({sparse_views.MEISTER}, Table 6)",
                             f"[CLS] rows, mean τ softmax {softmax:+.2f} → sparsemax {sparse:+.2f} ({on})",
                             HOLDS if sparse < softmax else FAILS))
    return rows


def findings(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """One row per claim: claim, paper, ours, verdict."""
    head_summary = read_head_summary(run, tasks)
    shares = data.read(run, "pattern_shares", tasks=tasks)
    rows = [*_patterns(shares, tasks), *_cls_row(run, head_summary), *_finetuning(run, head_summary), *_cost(run, tasks),
            *_norm_weighting(head_summary), *_efficient(run, head_summary, shares, tasks), *_attribution(run, tasks),
            *_sparse(run, tasks), *_short_inputs(run, tasks)]
    return pl.DataFrame(rows, schema=_COLUMNS)
