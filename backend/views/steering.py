"""The Steering view: generate with a direction added to the residual stream after block L,
for a grid of α, next to a random direction of the same norm (the control).

Direction kinds:

- ``"means"``: mean pooled last-token state of the second label minus that of the first, at
  the layer, from the store's runs of the labelled set (``labels``; default: the set's two
  labels in sorted order, e.g. plural → singular on the agreement set);
- ``"probe"``: the weight vector of a ridge probe (the Probes page's ``ridge`` method, fitted
  on all of the set's pooled last-token states of the two labels at the layer), pointing to
  the second label: what the probe reads, as a direction to add;
- ``"random"``: a seeded Gaussian direction (then the control is another seeded one);
- ``"feature:F"``: the decoder row of latent F of the layer's sparse dictionary (the one
  trained on the set with the default settings, else the one imported for the layer; see
  ``backend/views/dictionaries.py``);
- a path to a ``.npy`` vector of d_model values.

The random control has the same norm as the direction. What is added is
``α · unit · typical_norm`` (see ``backend.capture.steering``), so α is in units of the layer's
typical residual norm, measured per prompt on its unsteered states.

**Flip rate** (for a set): the share of prompts whose first generated token differs
from the unsteered one (α = 0; greedy unless a temperature is given, then the same seeded
sample). **Toward** (for a set with two labels): each class's *answers* are, in this order, the words
given in ``answers`` (one tuple per label); for the bundled ``agreement`` set, the demo
language's singular / plural verbs; when the labels are themselves single tokens (``is`` /
``are``), those tokens; else the tokens the unsteered model puts first on that class's prompts
and never on the other class's (fragile with few prompts: name the answers). For each
label, ``toward[kind][label][α]`` is the share of that label's prompts that answer (unsteered
first token among its own answers) whose steered first token is one of the *other* class's
answers: on the agreement set, the verb's number flipping. Both are computed for the
direction and for the control, per α. ``compute`` / ``cached`` as in the Patching view (derived cache).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from backend import derived
from backend.errors import LayerScopeError
from backend.records import MAX_TEMPERATURE
from backend.store import Store

VERSION = 1  #: bump when the computation changes what a stored result means
CACHE_KIND = "steering"
MAX_PROMPTS = 64
DIRECTIONS = ("means", "probe", "random")  #: besides a path to a .npy vector
MAX_ALPHA = 1000.0  #: |α| beyond this is no experiment (units of the layer's typical norm)


@dataclass(frozen=True, kw_only=True)
class Request:
    model: str
    prompts: tuple[str, ...] = ()  #: typed prompts (when no set)
    set_name: str | None = None  #: a labelled set (its texts are the prompts unless typed)
    layer: int = 1
    direction: str = "means"  #: "means" | "random" | path to a .npy vector
    labels: tuple[str, ...] | None = None  #: (from, to) for "means"; default: sorted labels
    alphas: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
    max_new_tokens: int = 8
    temperature: float = 0.0  #: 0 = greedy; else sampled with capture.generate's seeds
    seed: int = 0
    start: int = 0  #: steer positions >= start only (0 = every position)
    max_prompts: int = MAX_PROMPTS  #: first prompts of the set (flip rates over these)
    answers: tuple[tuple[str, ...], tuple[str, ...]] | None = None  #: per label, its answers
    dtype: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(p for p in self.prompts if p.strip()))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.prompts and not self.set_name:
            raise LayerScopeError("Type a prompt or pick a prompt set to steer.")
        if not self.alphas:
            raise LayerScopeError("Give at least one α, e.g. -8,-4,0,4,8.")
        if not all(np.isfinite(self.alphas)) or max(map(abs, self.alphas)) > MAX_ALPHA:
            raise LayerScopeError(
                f"Every α must be a finite number between -{MAX_ALPHA:g} and {MAX_ALPHA:g} "
                "(α is in units of the layer's typical norm: a few already break a model)."
            )
        if self.direction.startswith("feature:"):
            feature_id(self.direction)  # a dictionary's decoder row at the layer
        elif self.direction not in DIRECTIONS and not self.direction.endswith(".npy"):
            raise LayerScopeError(
                f"Unknown direction '{self.direction}': use means, probe, random, feature:F or "
                "a path to a .npy."
            )
        if self.direction in ("means", "probe") and not self.set_name:
            raise LayerScopeError(f"The '{self.direction}' direction needs a labelled set (--set).")
        if not 1 <= self.max_new_tokens <= 512:
            raise LayerScopeError("Ask for between 1 and 512 new tokens.")
        if not (self.temperature == 0 or 0 < self.temperature <= MAX_TEMPERATURE):
            raise LayerScopeError(
                f"Temperature must be 0 (greedy) or above 0 and at most {MAX_TEMPERATURE:g}."
            )
        if self.max_prompts < 1:
            raise LayerScopeError("--max-prompts must be at least 1.")
        if self.answers is not None and (len(self.answers) != 2 or not all(self.answers)):
            raise LayerScopeError("Give answers for both labels, e.g. runs,smiles;run,smile.")
        if self.labels is not None and len(self.labels) != 2:
            raise LayerScopeError("Name two labels to compare, e.g. singular,plural.")


@dataclass(frozen=True)
class Result:
    request: Request
    alphas: list[float]
    prompts: list[str]
    prompt_labels: list[str | None]
    direction: list[float]  #: the raw direction (d_model)
    control: list[float]  #: the random control, same norm
    direction_norm: float
    typical_norms: list[float]  #: per prompt, at the layer
    #: continuations[kind][prompt][alpha] text, kind in ("direction", "control")
    continuations: dict
    first_tokens: dict  #: same shape: the first generated token's text
    flip_rate: dict | None  #: kind -> [per alpha]; None without a set
    toward: dict | None  #: kind -> label -> [per alpha]; None without a two-label set
    labels: list[str] | None
    from_cache: bool = field(default=False, compare=False)

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for kind in ("direction", "control"):
            for ai, a in enumerate(self.alphas):
                row = {"kind": kind, "alpha": a}
                if self.flip_rate is not None:
                    row["flip_rate"] = self.flip_rate[kind][ai]
                for lab, vals in (self.toward or {}).get(kind, {}).items():
                    row[f"toward_from_{lab}"] = vals[ai]
                row["example"] = self.continuations[kind][0][ai]
                rows.append(row)
        return pd.DataFrame(rows)

    def continuations_frame(self, prompt: int = 0) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "alpha": self.alphas,
                "direction": self.continuations["direction"][prompt],
                "random control": self.continuations["control"][prompt],
            }
        )

    def to_dict(self) -> dict:
        return {
            "layer": self.request.layer,
            "direction_kind": self.request.direction,
            "labels": self.labels,
            "alphas": list(self.alphas),
            "prompts": list(self.prompts),
            "prompt_labels": list(self.prompt_labels),
            "direction_norm": round(self.direction_norm, 6),
            "control_norm": round(float(np.linalg.norm(self.control)), 6),
            "typical_norm_median": round(float(np.median(self.typical_norms)), 6),
            "flip_rate": self.flip_rate,
            "toward": self.toward,
            "continuations": self.continuations,
            "first_tokens": self.first_tokens,
        }

    def _payload(self) -> bytes:
        d = self.to_dict() | {
            "direction": self.direction,
            "control": self.control,
            "direction_norm": self.direction_norm,
            "typical_norms": self.typical_norms,
        }
        return json.dumps(d).encode()

    @classmethod
    def _from_payload(cls, req: Request, raw: bytes) -> Result:
        d = json.loads(raw)
        return cls(
            request=req,
            alphas=d["alphas"],
            prompts=d["prompts"],
            prompt_labels=d["prompt_labels"],
            direction=d["direction"],
            control=d["control"],
            direction_norm=float(d["direction_norm"]),
            typical_norms=d["typical_norms"],
            continuations=d["continuations"],
            first_tokens=d["first_tokens"],
            flip_rate=d["flip_rate"],
            toward=d["toward"],
            labels=d["labels"],
            from_cache=True,
        )


def cache_key(req: Request) -> str:
    from backend import models

    model_id = models.resolve(req.model).model_id
    npy = None
    if req.direction.endswith(".npy"):
        p = Path(req.direction)
        npy = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else req.direction
    parts = [
        VERSION,
        model_id,
        req.dtype,
        req.device,
        list(req.prompts),
        req.set_name,
        req.layer,
        req.direction,
        npy,
        list(req.labels) if req.labels else None,
        list(req.alphas),
        req.max_new_tokens,
        req.temperature,
        req.seed,
        req.start,
        req.max_prompts,
        [list(a) for a in req.answers] if req.answers else None,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def cached(store: Store, req: Request) -> Result | None:
    """The stored result of this exact request, or None; never loads a model."""
    if not derived.may_hold(store, req.model):
        return None
    try:
        key = cache_key(req)
    except OSError:
        return None
    return derived.load(store, CACHE_KIND, key, lambda b: Result._from_payload(req, b))


def compute(store: Store, req: Request, lm=None, use_cache: bool = True) -> Result:
    key = cache_key(req)
    if use_cache:
        hit = derived.load(store, CACHE_KIND, key, lambda b: Result._from_payload(req, b))
        if hit is not None:
            return hit
    res = _compute(store, req, lm)
    derived.save(store, CACHE_KIND, key, res._payload())
    return res


def feature_id(direction: str) -> int:
    """F of a ``feature:F`` direction (the decoder row of latent F of the layer's dictionary)."""
    try:
        f = int(direction.removeprefix("feature:"))
    except ValueError:
        f = -1
    if f < 0:
        raise LayerScopeError(f"'{direction}' is not a feature direction: write feature:F, F >= 0.")
    return f


def save_direction(db_path, data: bytes) -> str:
    """An uploaded .npy direction, checked and kept in the cache's folder: its file name."""
    from backend import directions

    return directions.save_upload(db_path, data)


def uploaded_direction(db_path, name: str) -> str:
    """A page's ``?direction=`` that is not means/probe/random: an uploaded file's name only
    (never a server path; the error does not echo it). The file's path for ``Request``."""
    from backend import directions

    return directions.in_cache_folder(db_path, name)


def random_like(direction: np.ndarray, seed: int) -> np.ndarray:
    """A seeded Gaussian direction with the same L2 norm as ``direction``."""
    r = np.random.default_rng([seed, 0x57EE]).standard_normal(direction.shape[-1])
    return r / np.linalg.norm(r) * float(np.linalg.norm(direction))


def means_direction(
    store: Store, runs: pd.DataFrame, layer: int, labels: tuple[str, str]
) -> np.ndarray:
    """mean(last-token state | labels[1]) - mean(last-token state | labels[0]) at ``layer``."""
    from backend.views.units import prompt_units

    x, meta = prompt_units(store, runs, [layer], "last")
    lab = meta["label"].astype(str).to_numpy()
    out = []
    for name in labels:
        sel = lab == name
        if not sel.any():
            have = ", ".join(sorted(set(lab))) or "no labelled prompts"
            raise LayerScopeError(f"No prompt of the set has the label '{name}' (it has: {have}).")
        out.append(x[0, sel].mean(0))
    return (out[1] - out[0]).astype(np.float64)


def probe_direction(
    store: Store, runs: pd.DataFrame, layer: int, labels: tuple[str, str]
) -> np.ndarray:
    """The raw-space weight vector of a ridge probe for labels[1] vs labels[0] on the pooled
    last-token states at ``layer`` (fitted on all of them), signed to point to labels[1]."""
    from backend.analysis import linear
    from backend.analysis.probes import grouped_folds
    from backend.views.units import prompt_units

    x, meta = prompt_units(store, runs, [layer], "last")
    lab = meta["label"].astype(str).to_numpy()
    keep = np.isin(lab, labels)
    y = (lab[keep] == labels[1]).astype(np.int64)
    if y.min() == y.max():
        raise LayerScopeError(f"The probe direction needs prompts of both labels {labels}.")
    tests = [te for _, te in grouped_folds(y, np.arange(len(y)), 2)]
    fit = linear.ridge_layer(x[0, keep], y, y, tests, 2)
    return fit.weights[0].astype(np.float64)


def _label_token(tok, label: str) -> int | None:
    for s in (" " + label.strip(), label):
        ids = tok.encode(s, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
    return None


def known_answers(set_name: str | None, labels) -> tuple | None:
    """The bundled agreement set's answers: the demo language's verbs by number."""
    if set_name == "agreement" and labels is not None and set(labels) == {"singular", "plural"}:
        from backend.demo.words import VERBS

        by = {"singular": tuple(VERBS), "plural": tuple(VERBS.values())}
        return tuple(by[lab] for lab in labels)
    return None


def answer_sets(tok, labels, plabels, base, answers=None) -> list[set[int]]:
    """Per label, its answers: the given words (single tokens only), the label's own token
    when both labels are single tokens, else the unsteered first tokens of its prompts that no
    prompt of the other label starts with."""
    if answers is not None:
        sets = [{t for w in ws if (t := _label_token(tok, w)) is not None} for ws in answers]
        if not all(sets):
            raise LayerScopeError("None of the answers of one label is a single token.")
        return sets
    lt = [_label_token(tok, lab) for lab in labels]
    if all(t is not None for t in lt) and lt[0] != lt[1]:
        return [{lt[0]}, {lt[1]}]
    firsts = [{int(b) for b, pl in zip(base, plabels) if pl == lab} for lab in labels]
    return [firsts[0] - firsts[1], firsts[1] - firsts[0]]


def _toward(tok, labels, plabels, base, first_ids, na, answers=None) -> dict:
    answers = answer_sets(tok, labels, plabels, base, answers)
    out = {}
    for kind, ids in first_ids.items():
        ids = np.asarray(ids)
        out[kind] = {}
        for li, lab in enumerate(labels):
            own, other = answers[li], answers[1 - li]
            rows = [i for i, (pl, b) in enumerate(zip(plabels, base)) if pl == lab and b in own]
            out[kind][lab] = [
                round(float(np.mean([ids[i, ai] in other for i in rows])), 6) if rows else None
                for ai in range(na)
            ]
    return out


def _inputs(store: Store, req: Request, lm):
    """(lm, runs, labels, direction, control, prompts, prompt labels, sampling)."""
    from backend import models
    from backend.records import Sampling
    from backend.views.units import set_runs_or_error

    if lm is None:
        lm = models.get_model(req.model, req.dtype, req.device)
    n_layers, d = lm.info.n_layers, lm.info.d_model
    if not 0 <= req.layer <= n_layers:
        raise LayerScopeError(f"Layer {req.layer} does not exist: the model has 0..{n_layers}.")

    runs = None
    labels = list(req.labels) if req.labels else None
    if req.set_name:
        runs = set_runs_or_error(store, req.set_name, lm.info.model_id)
        if labels is None:
            found = sorted({str(v) for v in runs["label"].dropna()})
            if len(found) != 2 and req.direction in ("means", "probe"):
                raise LayerScopeError(
                    f"The set has {len(found)} labels ({', '.join(found)}); name the two to "
                    "compare (--labels A,B)."
                )
            labels = found if len(found) == 2 else None
        if labels is not None:
            runs = runs[runs["label"].astype(str).isin(labels)].reset_index(drop=True)

    if req.direction == "means":
        direction = means_direction(store, runs, req.layer, tuple(labels))
    elif req.direction == "probe":
        direction = probe_direction(store, runs, req.layer, tuple(labels))
    elif req.direction == "random":
        direction = random_like(np.ones(d), req.seed + 1)
    elif req.direction.startswith("feature:"):
        from backend.views.dictionaries import feature_direction

        f = feature_id(req.direction)
        direction = feature_direction(store, lm.info.model_id, req.layer, req.set_name, f)
    else:
        from backend import directions

        direction = directions.load_vector(Path(req.direction), d)
    if not np.isfinite(direction).all() or not np.linalg.norm(direction) > 0:
        raise LayerScopeError("The steering direction is zero or not finite.")
    control = random_like(direction, req.seed)

    if req.prompts:
        prompts, plabels = list(req.prompts), [None] * len(req.prompts)
    else:
        sub = runs.head(req.max_prompts)
        prompts, plabels = sub["text"].tolist(), [str(v) for v in sub["label"]]
    sampling = None
    if req.temperature > 0:
        sampling = Sampling(samples=1, max_new_tokens=req.max_new_tokens,
                            temperature=req.temperature, seed=req.seed)  # fmt: skip
    return lm, runs, labels, direction, control, prompts, plabels, sampling


def _compute(store: Store, req: Request, lm) -> Result:
    import torch

    from backend.capture import steering as S
    from backend.views.lens import decode

    lm, runs, labels, direction, control, prompts, plabels, sampling = _inputs(store, req, lm)
    alphas = list(req.alphas)
    na = len(alphas)
    units = torch.stack(
        [S.unit(direction)] * na + [S.unit(control)] * na
    )  # rows: direction α..., control α...
    # the unsteered first token (α = 0): needed for the flip rate even if 0 is not in the grid
    grid = alphas + alphas + [0.0]
    units = torch.cat([units, S.unit(direction)[None]])
    cont = {"direction": [], "control": []}
    first = {"direction": [], "control": []}
    first_ids = {"direction": [], "control": []}
    plain_first, norms = [], []
    tok = lm.tokenizer
    for text in prompts:
        out = S.steer_generate(
            lm,
            text,
            req.layer,
            units,
            grid,
            req.max_new_tokens,
            sampling=sampling,
            start=req.start,
        )
        norms.append(out.typical_norm)
        ids = out.new_ids
        names = decode(lm, sorted({g[0] for g in ids if g}))
        for kind, rows in (("direction", ids[:na]), ("control", ids[na : 2 * na])):
            cont[kind].append([tok.decode(g, skip_special_tokens=True) for g in rows])
            first[kind].append([names[g[0]] if g else "" for g in rows])
            first_ids[kind].append([g[0] if g else -1 for g in rows])
        # greedy first token without steering: same for every row when sampling is off
        plain_first.append(ids[-1][0] if ids[-1] else -1)

    flip = toward = None
    if not req.prompts and runs is not None:
        base = np.asarray(plain_first)
        flip = {
            k: [
                round(float((np.asarray(first_ids[k])[:, ai] != base).mean()), 6)
                for ai in range(na)
            ]
            for k in first_ids
        }
        if labels is not None:
            given = req.answers or known_answers(req.set_name, labels)
            toward = _toward(tok, labels, plabels, base, first_ids, na, given)
    return Result(
        request=req,
        alphas=alphas,
        prompts=prompts,
        prompt_labels=plabels,
        direction=direction.tolist(),
        control=control.tolist(),
        direction_norm=float(np.linalg.norm(direction)),
        typical_norms=norms,
        continuations=cont,
        first_tokens=first,
        flip_rate=flip,
        toward=toward,
        labels=labels,
    )
