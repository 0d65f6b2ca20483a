"""Sampled runs of a prompt set, grouped by prompt: commitment, outcomes, deltas.

Shared by the Generation page and the ``generate`` command. Reads the store one layer at a
time (every run of the set in one query per layer), so memory stays at one layer's states.

Centring: raw residual streams share a large common direction (anisotropy, massive
activations) that makes every cosine look close to 1. ``centre`` picks the reference that is
subtracted before cosines are taken:

- ``"start"`` (default): each run's state at step 0 (the prompt end, identical in every run of
  a prompt). Commitment then compares what the runs' generations *added*; step 0 is undefined
  (NaN). It does not depend on which other prompts were loaded.
- ``"set"``: the mean state over every step of every sampled run loaded, per layer. Prompts far
  from that mean get high cosines whatever their runs do, so comparisons across prompts are
  confounded (on the demo: ambiguous colour lists 0.98 vs counting 0.94 at layer 1, step 1).
- ``"none"``: raw states.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from backend.analysis.commitment import (
    Commitment,
    Correlation,
    HeldOutCell,
    OutcomeSeparation,
    PartialCorrelation,
    consistency,
    correlate,
    divergence_step,
    held_out_best_cell,
    mean_pairwise_cosine,
    outcome_separation,
    partial_correlation,
    run_similarity,
    surface_agreement_by_step,
)
from backend.analysis.commitment import correlation_grid as correlation_grid  # for the page
from backend.analysis.similarity import SimilarityMatrix
from backend.errors import LayerScopeError
from backend.patterns import Pattern
from backend.records import Sampling, request_id
from backend.store import Store
from backend.views.generation_tree import TREE_NOTE as TREE_NOTE
from backend.views.generation_tree import TREE_NOTE_P as TREE_NOTE_P
from backend.views.generation_tree import commitment_strip as commitment_strip
from backend.views.generation_tree import decided_at as decided_at
from backend.views.generation_tree import prefix_tree as prefix_tree

NONE = "(none)"
CENTRES = ("start", "set", "none")


@dataclass
class PromptSamples:
    text: str
    label: str | None
    group: str | None
    run_ids: list[str]
    seeds: list[int]
    continuations: list[list[str]]  #: generated tokens of each run (<eos> included)
    answers: list[str]  #: extracted answer of each run
    outcomes: list[str]  #: answer, or correct / wrong against the label
    commitment: Commitment
    truncated: bool
    n_prompt_tokens: int

    @property
    def consistency(self) -> float:
        return consistency(self.outcomes)


def fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"


def correlation_text(c: dict, partial: dict | None = None) -> str:
    """One sentence for a correlation dict (Correlation fields), with its partial twin."""
    if not c.get("available", True):
        return c.get("warning") or "too few prompts for a correlation"
    text = (
        f"Spearman {fmt(c['spearman'])} [{fmt(c.get('spearman_ci_low'))}, "
        f"{fmt(c.get('spearman_ci_high'))}] (permutation p = {fmt(c.get('spearman_p'))}), "
        f"Pearson {fmt(c['pearson'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]"
    )
    if partial and partial.get("available", True):
        text += (
            f"; with surface agreement partialled out r = {fmt(partial['r'])} "
            f"[{fmt(partial['ci_low'])}, {fmt(partial['ci_high'])}]"
        )
    if c.get("warning"):
        text += f". Note: {c['warning']}"
    return text


@dataclass(frozen=True)
class SetStatistics:
    """What the Generation view reports across the set (page and CLI print the same)."""

    layer: int
    step: int
    raw: Correlation  #: commitment vs consistency at (layer, step)
    partial: PartialCorrelation  #: the same with surface agreement up to the step partialled out
    held_out: HeldOutCell  #: best cell chosen on half the prompts, reported on the other half

    def to_dict(self) -> dict:
        def clean(d: dict) -> dict:
            return {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in d.items()
                if not isinstance(v, np.ndarray | Correlation | PartialCorrelation)
            }

        h = self.held_out
        return {
            "layer": self.layer,
            "step": self.step,
            "correlation": clean(self.raw.__dict__),
            "partial_correlation": {
                "controls": "surface agreement up to the step",
                **clean(self.partial.__dict__),
            },
            "best_held_out": {
                "layer": h.layer,
                "step": h.step,
                "r_select": h.r_select,
                "r": h.r,
                "partial_r": h.partial_r,
                "n_select": h.n_select,
                "n_test": h.n_test,
                "seed": h.seed,
                "how": "chosen on a random half of the prompts, reported on the other half",
            }
            | {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in {"r_select": h.r_select, "r": h.r, "partial_r": h.partial_r}.items()
            },
        }


@dataclass
class SampledSet:
    model_id: str
    sampling: Sampling
    dtype: str
    prompts: list[PromptSamples]
    centre: np.ndarray | None  #: (n_layers, d) subtracted before cosines (mode "set")
    deltas: np.ndarray  #: (n_runs, n_layers, d) last generated step minus prompt end
    run_prompt: np.ndarray  #: (n_runs,) index of each run's prompt in ``prompts``
    versus_label: bool  #: outcomes are correct / wrong against the set's label
    mode: str = "start"  #: what was subtracted before cosines: "start" | "set" | "none"

    @property
    def n_layers(self) -> int:
        return self.deltas.shape[1]

    def sims(self) -> np.ndarray:
        """(n_prompts, n_layers, n_steps) commitment per prompt, NaN-padded to the longest
        (built once per set: the page reads it for every table and statistic)."""
        return self._sims

    @cached_property
    def _sims(self) -> np.ndarray:
        n_s = max(p.commitment.similarity.shape[1] for p in self.prompts)
        out = np.full((len(self.prompts), self.n_layers, n_s), np.nan)
        for i, p in enumerate(self.prompts):
            out[i, :, : p.commitment.similarity.shape[1]] = p.commitment.similarity
        return out

    def table(self, layer: int, step: int) -> pd.DataFrame:
        """One row per prompt: commitment at (layer, step), consistency, answers."""
        sims = self.sims()
        return pd.DataFrame(
            {
                "prompt": [p.text for p in self.prompts],
                "label": [p.label for p in self.prompts],
                "group": [p.group for p in self.prompts],
                "commitment": sims[:, layer, step] if step < sims.shape[2] else np.nan,
                "consistency": [p.consistency for p in self.prompts],
                "divergence_step": [p.commitment.divergence_step for p in self.prompts],
                "answers": [_answer_summary(p.outcomes) for p in self.prompts],
                "runs": [len(p.run_ids) for p in self.prompts],
                "run_id": [p.run_ids[0] for p in self.prompts],
            }
        )

    def surface(self) -> np.ndarray:
        """(n_prompts, n_steps) surface agreement: how much of the runs' emitted tokens agree
        up to each step (what commitment partly re-measures)."""
        return self._surface

    @cached_property
    def _surface(self) -> np.ndarray:
        n_s = self.sims().shape[2]
        return np.stack([surface_agreement_by_step(p.continuations, n_s) for p in self.prompts])

    def held_out(self, seed: int = 0) -> HeldOutCell:
        """The best (layer, step) chosen on a random half of the prompts and reported on the
        other half; it does not depend on the cell a user inspects, so it is computed once."""
        if seed not in self._held_out:
            cons = np.array([p.consistency for p in self.prompts])
            self._held_out[seed] = held_out_best_cell(
                self.sims(), cons, z=self.surface(), seed=seed
            )
        return self._held_out[seed]

    @cached_property
    def _held_out(self) -> dict[int, HeldOutCell]:
        return {}

    def statistics(self, layer: int, step: int, seed: int = 0) -> SetStatistics:
        """Commitment vs consistency at (layer, step): raw correlation, the partial correlation
        with surface agreement at that step partialled out, and the best cell chosen on one
        half of the prompts and reported on the other (so the choice cannot inflate it)."""
        sims = self.sims()
        cons = np.array([p.consistency for p in self.prompts])
        z = self.surface()
        x = sims[:, layer, step] if step < sims.shape[2] else np.full(len(cons), np.nan)
        zs = z[:, step] if step < z.shape[1] else np.full(len(cons), np.nan)
        return SetStatistics(
            layer=layer,
            step=step,
            raw=correlate(x, cons),
            partial=partial_correlation(x, cons, zs),
            held_out=self.held_out(seed),
        )

    def success(self) -> tuple[np.ndarray, str]:
        """(n_runs,) bool and what it means: 'correct' against the label, else 'agrees with the
        majority answer of its prompt'."""
        if self.versus_label:
            return np.array(
                [o == "correct" for p in self.prompts for o in p.outcomes]
            ), "correct (answer = label)"
        ok = []
        for p in self.prompts:
            top = Counter(p.outcomes).most_common(1)[0][0]
            ok += [o == top for o in p.outcomes]
        return np.array(ok), "agrees with its prompt's majority answer"

    def separation(self) -> OutcomeSeparation:
        success, _ = self.success()
        return outcome_separation(self.deltas, success, self.run_prompt)

    def runs(self) -> pd.DataFrame:
        """One row per run: prompt, sample, seed, continuation, answer, outcome, run_id."""
        return pd.DataFrame(
            [
                {
                    "prompt": p.text,
                    "label": p.label,
                    "sample": j,
                    "seed": p.seeds[j],
                    "continuation": join_tokens(p.continuations[j]),
                    "answer": p.answers[j],
                    "outcome": p.outcomes[j],
                    "run_id": p.run_ids[j],
                }
                for p in self.prompts
                for j in range(len(p.run_ids))
            ]
        )


def _answer_summary(outcomes: list[str]) -> str:
    return ", ".join(f"{a} ×{c}" for a, c in Counter(outcomes).most_common())


def join_tokens(tokens: list[str], skip: tuple[str, ...] = ()) -> str:
    """Readable text of decoded tokens: word-level vocabularies decode without spaces, BPE
    tokens carry their own."""
    toks = [t for t in tokens if t not in skip]
    glue = "" if any(t[:1].isspace() for t in toks[1:]) else " "
    return glue.join(toks).strip()


def answer_of(
    tokens: list[str], regex: str | Pattern | None = None, special: tuple[str, ...] = ()
) -> str:
    """The answer of one continuation: first match of ``regex`` (its group 1 if it has one),
    else the whole continuation (special tokens dropped), so that consistency asks whether
    the runs did the same thing, not only whether they started alike. ``(none)`` when nothing
    matches or nothing was generated."""
    text = join_tokens(tokens, special)
    if regex:
        m = (regex if isinstance(regex, Pattern) else Pattern(regex)).search(text)
        if m is None:
            return NONE
        return (m.group(1) if m.groups() and m.group(1) is not None else m.group(0)).strip()
    return text or NONE


def _norm(s) -> str:
    return str(s).strip().lower()


def load(
    store: Store,
    model_id: str,
    texts: list[str],
    s: Sampling,
    dtype: str,
    labels: dict | None = None,
    groups: dict | None = None,
    regex: str | None = None,
    versus_label: bool = False,
    max_steps: int | None = None,
    centre: str = "start",
) -> SampledSet | None:
    """The sampled runs (samples 0..N-1 of ``s``) of those ``texts`` that have >= 2 of them.
    None when no prompt has. ``max_steps`` caps the steps compared (step 0 = prompt end; default: every step)."""
    labels, groups = labels or {}, groups or {}
    parents = {request_id(model_id, t, s, dtype): t for t in dict.fromkeys(texts)}
    runs = store.request_runs(list(parents), s.samples)
    runs = runs[runs.groupby("parent")["run_id"].transform("size") >= 2].reset_index(drop=True)
    if runs.empty:
        return None
    ids = runs["run_id"].tolist()
    toks = store.generated_tokens(ids)
    specials = tuple(set(toks.loc[toks["is_special"], "token"]))
    gen = toks.groupby("run_id", sort=False)["token"].agg(list).reindex(ids)
    gen = [g if isinstance(g, list) else [] for g in gen]
    n_tok = runs["n_tokens"].to_numpy()
    n_p = runs["n_prompt_tokens"].to_numpy()
    n_steps = int((n_tok - n_p).max() + 1)
    if max_steps is not None:
        n_steps = min(n_steps, max_steps)
    offsets = np.r_[0, np.cumsum(n_tok)[:-1]]
    k = np.arange(n_steps)
    valid = k[None] <= (n_tok - n_p)[:, None]  # (n_runs, n_steps)
    rows = offsets[:, None] + np.minimum(n_p[:, None] - 1 + k[None], n_tok[:, None] - 1)
    order = runs.groupby("parent", sort=False).indices  # parent -> row indices (contiguous)
    blocks = [order[pa] for pa in parents if pa in order]
    n_layers = store.n_layers_of(ids[0])
    sims = [np.empty((n_layers, n_steps)) for _ in blocks]
    deltas, centres = None, []
    for layer in range(n_layers):
        x, _ = store.layer(ids, layer)  # (total tokens, d)
        st = x[rows]  # (n_runs, n_steps, d)
        if centre not in CENTRES:
            raise LayerScopeError(f"centre must be one of {', '.join(CENTRES)}.")
        c = st[valid].mean(0) if centre == "set" else np.zeros(x.shape[1], np.float32)
        centres.append(c)
        if deltas is None:
            deltas = np.empty((len(ids), n_layers, x.shape[1]), np.float32)
        deltas[:, layer] = x[offsets + n_tok - 1] - x[offsets + n_p - 1]
        for b, sl in enumerate(blocks):
            if centre == "start":  # what each run added since the prompt end (step 0)
                sims[b][layer] = mean_pairwise_cosine(st[sl] - st[sl][:, :1], valid[sl])
                sims[b][layer, 0] = np.nan  # nothing added yet: undefined
            else:
                sims[b][layer] = mean_pairwise_cosine(st[sl] - c, valid[sl])
    prompts, run_prompt = [], np.empty(len(ids), int)
    pattern = Pattern(regex) if regex else None  # one time budget for the whole set
    for b, sl in enumerate(blocks):
        text = runs["text"].iloc[sl[0]]
        cont = [gen[i] for i in sl]
        answers = [answer_of(g, pattern, specials) for g in cont]
        label = labels.get(text)
        label = None if label is None or (isinstance(label, float) and np.isnan(label)) else label
        if versus_label and label is None:
            raise LayerScopeError(
                f"Outcomes against the label need a label for every prompt; '{text[:60]}' has none."
            )
        outcomes = (
            [("correct" if _norm(a) == _norm(label) else "wrong") for a in answers]
            if versus_label
            else answers
        )
        com = Commitment(sims[b], valid[sl].sum(0), divergence_step(cont), len(sl))
        prompts.append(
            PromptSamples(
                text,
                label,
                groups.get(text),
                [ids[i] for i in sl],
                runs["seed"].iloc[sl].astype(int).tolist(),
                cont,
                answers,
                outcomes,
                com,
                bool(runs["truncated"].iloc[sl].any()),
                int(n_p[sl[0]]),
            )
        )
        run_prompt[sl] = b
    return SampledSet(
        model_id,
        s,
        dtype,
        prompts,
        np.stack(centres) if centre == "set" else None,
        deltas,
        run_prompt,
        versus_label,
        centre,
    )


def run_matrix(store: Store, ss: SampledSet, prompt: int, layer: int, step: int) -> np.ndarray:
    """(n_runs, n_runs) cosine between one prompt's runs at (layer, step), centred like the
    commitment; NaN rows for runs that ended before ``step``."""
    p = ss.prompts[prompt]
    x, idx = store.layer(p.run_ids, layer)
    n = idx.groupby("run_id", sort=False).size().reindex(p.run_ids).to_numpy()
    starts = np.r_[0, np.cumsum(n)[:-1]]
    pos = p.n_prompt_tokens - 1 + step
    ok = pos < n
    v = x[starts + np.minimum(pos, n - 1)].astype(np.float64)
    if ss.mode == "start":
        v = v - x[starts + p.n_prompt_tokens - 1]
    elif ss.centre is not None:
        v = v - ss.centre[layer]
    m = run_similarity(v)
    m[~ok] = np.nan
    m[:, ~ok] = np.nan
    return m


def label_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean commitment and consistency per label (the demo's evidence)."""
    t = table.assign(label=table["label"].fillna(NONE))
    return (
        t.groupby("label")
        .agg(
            prompts=("prompt", "size"),
            commitment=("commitment", "mean"),
            consistency=("consistency", "mean"),
        )
        .reset_index()
    )


def run_by_run(store: Store, ss: SampledSet, prompt: int, layer: int, step: int):
    """:func:`run_matrix` as a SimilarityMatrix whose rows and columns name each run by the
    start of its continuation (the heatmaps of the Generation and Similarity pages)."""
    m = run_matrix(store, ss, prompt, layer, step)
    p = ss.prompts[prompt]
    names = tuple(f"run {i}: {join_tokens(g)[:24]}" for i, g in enumerate(p.continuations))
    return SimilarityMatrix(m, names, names, "run", -1, 1)


# -- the view contract: Request -> compute -> Result (page and `generate` CLI) ----------------
@dataclass(frozen=True, kw_only=True)
class Request:
    """The sampled runs of a set to read (the samples come from a ``generate`` job)."""

    model_id: str
    set_name: str
    sampling: Sampling  #: the runs' sampling settings (``samples``: how many per prompt)
    dtype: str = "float32"  #: the dtype the runs were sampled in (part of their ids)
    regex: str | None = None  #: answer = first match (group 1 if any); None: the whole text
    versus_label: bool = False  #: outcome = correct / wrong against the set's label
    max_steps: int | None = None  #: cap on the steps compared (default: every step)
    centre: str = "start"  #: one of CENTRES
    layer: int | None = None  #: the set statistics' layer (default: last)
    step: int = 1  #: the set statistics' step (0 = last prompt token)
    tree: bool = False  #: add each prompt's prefix tree to to_dict()

    def __post_init__(self):
        if self.centre not in CENTRES:
            raise LayerScopeError(f"centre must be one of {', '.join(CENTRES)}.")
        if self.step < 0:
            raise LayerScopeError("The step must be 0 or more (0 = the last prompt token).")
        self.sampling.validate()


@dataclass(frozen=True, kw_only=True)
class Result:
    request: Request
    sampled: SampledSet | None  #: None when no prompt of the set has >= 2 sampled runs
    layer: int | None = None  #: the statistics' layer (the request's, or the last)
    statistics: SetStatistics | None = None  #: at (layer, step), with >= 3 prompts sampled

    def to_frame(self) -> pd.DataFrame:
        """One row per sampled prompt at (layer, step) (:meth:`SampledSet.table`)."""
        if self.sampled is None:
            return pd.DataFrame()
        return self.sampled.table(self.layer, self.request.step)

    def to_dict(self) -> dict:
        """What the ``generate`` command prints about the sampled runs."""
        ss, out = self.sampled, {"prompts": [], "correlation": None, "best": None}
        out["separation"] = None
        if ss is None:
            return out
        out["prompts"] = [
            {
                "prompt": q.text,
                "label": q.label,
                "samples": [join_tokens(g) for g in q.continuations],
                "answers": q.answers,
                "outcomes": q.outcomes,
                "consistency": q.consistency,
                "divergence_step": q.commitment.divergence_step,
                "commitment": np.round(q.commitment.similarity, 4).tolist(),
                **({"tree": prefix_tree(q.continuations)} if self.request.tree else {}),
            }
            for q in ss.prompts
        ]
        out["layer"], out["step"] = self.layer, self.request.step
        if self.statistics is not None:
            stats = self.statistics.to_dict()
            out["correlation"] = stats["correlation"]
            out["partial_correlation"] = stats["partial_correlation"]
            out["best"] = stats["best_held_out"]
        success, meaning = ss.success()
        if len(ss.prompts) > 1 and success.any() and not success.all():
            sep = ss.separation()
            out["separation"] = {
                "success": meaning,
                "runs": len(success),
                "successes": int(success.sum()),
                "judged": int(sep.judged.sum()),
                "accuracy": np.round(sep.accuracy, 4).tolist(),
                "auroc": np.round(sep.auroc, 4).tolist(),
                "best_layer": sep.best_layer,
            }
        return out


def compute(store: Store, req: Request, lm=None) -> Result:
    """The set's sampled runs (:func:`load`, labels and groups from the set) and, with three
    or more prompts sampled, the commitment-consistency statistics at (layer, step)."""
    df = store.get_set(req.set_name)
    texts = list(dict.fromkeys(df["text"]))
    labels = dict(zip(df["text"], df["label"]))
    groups = dict(zip(df["text"], df["group"])) if "group" in df else {}
    ss = load(
        store,
        req.model_id,
        texts,
        req.sampling,
        req.dtype,
        labels,
        groups,
        req.regex,
        req.versus_label,
        req.max_steps,
        req.centre,
    )
    if ss is None:
        return Result(request=req, sampled=None)
    layer = ss.n_layers - 1 if req.layer is None else req.layer
    if not 0 <= layer < ss.n_layers:
        raise LayerScopeError(f"--layer must be between 0 and {ss.n_layers - 1}.")
    stats = ss.statistics(layer, req.step) if len(ss.prompts) > 2 else None
    return Result(request=req, sampled=ss, layer=layer, statistics=stats)
