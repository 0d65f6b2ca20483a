"""The Training view: the same views with the training step as one more axis.

``compute(store, Request) -> Result`` over a model's checkpoints (``demo@step0`` ...
``demo@step3000``, each its own model in the store): per checkpoint and layer the Probes
view's accuracy with its shuffled control, the Layer statistics view's massive-activation
ratio, effective rank and anisotropy, and linear CKA of each layer to the final checkpoint
(and to the previous one) as the Similarity view computes it; per checkpoint its behaviour
(held-out loss, answer accuracy), measured by the ``checkpoints`` job and read from the
store's derived cache; and one PCA of a fixed layer across checkpoints (the trajectory view
with checkpoints as frames). Reads only the store: checkpoints without runs are listed in
``missing`` (the page offers the job, the CLI runs it), never computed here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend import derived, models
from backend.analysis import training as training_analysis
from backend.analysis.probes import ProbeResult
from backend.analysis.projection import Projection, project
from backend.analysis.stats import LayerStats
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import probes, similarity, stats, units

BEHAVIOUR_CACHE = "training_behaviour"  #: derived-cache kind of a checkpoint's behaviour
BEHAVIOUR_VERSION = 1
HELDOUT_PER_TASK = 40  #: held-out demo sentences per task for the loss (5 tasks: 200)
LEVEL = 0.9  #: a curve "has risen" from the first step it stays at or above this


def behaviour_key(model_id: str, set_name: str) -> str:
    payload = [model_id, set_name, BEHAVIOUR_VERSION, HELDOUT_PER_TASK]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def heldout_texts(family: str, prompts: pd.DataFrame) -> tuple[list[str], str]:
    """Text for the held-out loss, and what it is: for the bundled models, sentences of the
    demo language held out of training; otherwise the set's own prompts."""
    if family in models.BUNDLED_NAMES:
        from backend.demo import corpus

        texts = [e.text for t in corpus.TASKS for e in corpus.demo_set(t, HELDOUT_PER_TASK, 99)]
        return texts, f"{len(texts)} held-out sentences of the demo language"
    texts = prompts["text"].tolist()
    return texts, f"the set's {len(texts)} prompts"


def known_answers(set_name: str, labels) -> tuple | None:
    """Per label, the words that answer it (the agreement set: singular and plural verbs)."""
    from backend.views.steering import known_answers as answers

    return answers(set_name, labels)


def family_refs(store: Store, model: str) -> list[str]:
    """References ``<model>@...`` stored in the cache (one family), by training step."""
    refs = [r for r in store.list_models()["ref"] if str(r).startswith(f"{model}@")]
    return sorted(refs, key=lambda r: (models.step_of(r) is None, models.step_of(r) or 0, r))


def checkpoint_refs(model: str, which: str, store: Store | None = None) -> list[str]:
    """The checkpoint references ``--checkpoints`` names: ``all`` (a bundled model's saved
    checkpoints, else the family's checkpoints already in ``store``) or a comma-separated list
    of revisions (``step1250`` or ``1250``, as hub models such as Pythia name them). One clear
    LayerScopeError for a bad list."""
    if "@" in (model or ""):
        raise LayerScopeError(
            f"--checkpoints takes the model without a revision (e.g. 'demo'), not '{model}'."
        )
    which = (which or "").strip()
    known = models.checkpoints(model)
    if which == "all":
        if not known and store is not None and len(family_refs(store, model)) >= 2:
            return family_refs(store, model)
        if not known:
            raise LayerScopeError(
                f"'{model}' has no bundled checkpoints to list; name its revisions, e.g. "
                "--checkpoints step1000,step3000."
            )
        return [ref for _, ref in known]
    revs = [r.strip() for r in which.split(",") if r.strip()]
    if not revs:
        raise LayerScopeError("--checkpoints needs 'all' or a comma-separated list of steps.")
    refs = [f"{model}@step{r}" if r.isdigit() else f"{model}@{r}" for r in revs]
    if known:
        have = {ref for _, ref in known}
        bad = [r.partition("@")[2] for r in refs if r not in have]
        if bad:
            raise LayerScopeError(
                f"'{model}' has no checkpoint {', '.join(bad)}; its checkpoints are "
                + ", ".join(f"step{n}" for n, _ in known)
                + "."
            )
    # in training order (a revision that names no step, e.g. main, counts as step 0)
    return sorted(dict.fromkeys(refs), key=lambda r: models.step_of(r) or 0)


@dataclass(frozen=True, kw_only=True)
class Request:
    set_name: str
    checkpoints: tuple[str, ...]  #: model references in training order (demo@step0, ...)
    pool: probes.Pool = "last"  #: probe and trajectory units: one pooled vector per prompt
    folds: int = 5
    method: probes.Method = "logistic"
    cka_units: str = "tokens"  #: CKA units, as the Similarity view's model × model CKA
    layer: int | None = None  #: trajectory layer; None: the best probe layer at the end
    max_runs: int = 200  #: layer statistics over the first N prompts (as the Stats view)

    def __post_init__(self):
        if len(self.checkpoints) < 2:
            raise LayerScopeError("The Training view needs at least two checkpoints.")
        if self.cka_units not in similarity.UNITS:
            raise LayerScopeError(f"CKA units must be one of {', '.join(similarity.UNITS)}.")

    @property
    def steps(self) -> tuple[int, ...]:
        """Each checkpoint's training step (its position when the reference names none)."""
        return tuple(
            s if (s := models.step_of(r)) is not None else i for i, r in enumerate(self.checkpoints)
        )


def coverage(store: Store, req: Request) -> tuple[dict[str, str], list[str]]:
    """({ref: model_id} of checkpoints whose runs cover the set, [refs that do not])."""
    wanted = set(store.get_set(req.set_name)["text"])
    have, missing = {}, []
    for ref in req.checkpoints:
        row = store.find_model(ref)
        runs = store.set_runs(req.set_name, row["model_id"]) if row is not None else None
        if runs is None or not wanted or not wanted <= set(runs["text"]):
            missing.append(ref)
        else:
            have[ref] = row["model_id"]
    return have, missing


def behaviour_of(store: Store, model_id: str, set_name: str) -> dict | None:
    return derived.load(store, BEHAVIOUR_CACHE, behaviour_key(model_id, set_name), json.loads)


@dataclass(frozen=True)
class Result:
    request: Request
    refs: tuple[str, ...]  #: checkpoints with runs, in training order
    steps: tuple[int, ...]
    model_ids: tuple[str, ...]
    layers: tuple[int, ...]
    probes: tuple[ProbeResult, ...]  #: the Probes view's result per checkpoint
    stats: tuple[LayerStats, ...]  #: the Layer statistics view's result per checkpoint
    cka_final: np.ndarray  #: (n_checkpoints, n_layers) CKA of each layer to the last checkpoint
    cka_previous: np.ndarray  #: (n_checkpoints, n_layers) to the checkpoint before (row 0 NaN)
    n_cka_units: int  #: units behind each CKA value
    behaviour: tuple[dict | None, ...]  #: per checkpoint; None: not measured yet
    trajectory: Projection  #: coords (n_checkpoints, n_prompts, 2): one PCA over all steps
    trajectory_meta: pd.DataFrame  #: one row per prompt (text, label, group, pos, token)
    trajectory_layer: int
    missing: tuple[str, ...]  #: checkpoints without runs of the set (not shown)

    @property
    def probe_accuracy(self) -> np.ndarray:
        """(n_checkpoints, n_layers) cross-validated probe accuracy."""
        return np.stack([p.accuracy for p in self.probes])

    @property
    def probe_control(self) -> np.ndarray:
        """(n_checkpoints, n_layers) the same probe on shuffled labels."""
        return np.stack([p.control for p in self.probes])

    @property
    def best_probe(self) -> np.ndarray:
        """(n_checkpoints,) probe accuracy at each checkpoint's best layer."""
        return self.probe_accuracy.max(axis=1)

    def stat(self, name: str) -> np.ndarray:
        """(n_checkpoints, n_layers) of a LayerStats field: massive_ratio, effective_rank, ..."""
        return np.stack([np.asarray(getattr(s, name), dtype=np.float64) for s in self.stats])

    def behaviour_series(self, key: str) -> np.ndarray:
        """(n_checkpoints,) a behaviour number per checkpoint (NaN where not measured)."""
        return np.array([np.nan if b is None else b.get(key, np.nan) for b in self.behaviour])

    @property
    def missing_behaviour(self) -> tuple[str, ...]:
        return tuple(r for r, b in zip(self.refs, self.behaviour) if b is None)

    def decodable_layer(self) -> list[int | None]:
        """Per checkpoint, the first layer where the probe's interval clears the majority and
        the shuffled control by 0.05 (the Probes view's verdict); None: nowhere."""
        return [p.first_decodable() for p in self.probes]

    def onsets(self) -> dict:
        """The steps from which each curve stays risen: decodable (the Probes verdict at some
        layer), best-layer probe accuracy >= LEVEL, answer accuracy >= LEVEL, CKA of the best
        layer to the final checkpoint >= LEVEL."""
        s = self.steps
        dec = [1.0 if d is not None else 0.0 for d in self.decodable_layer()]
        best = int(np.argmax(self.probe_accuracy[-1]))
        return {
            "level": LEVEL,
            "decodable": training_analysis.onset(s, dec, 1.0),
            "probe": training_analysis.onset(s, self.best_probe, LEVEL),
            "behaviour": training_analysis.onset(
                s, self.behaviour_series("answer_accuracy"), LEVEL
            ),
            "cka_layer": self.layers[best],
            "cka": training_analysis.onset(s, self.cka_final[:, best], LEVEL),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per (checkpoint, layer) with every per-layer number of the view."""
        acc, ctl = self.probe_accuracy, self.probe_control
        cols = {"massive_ratio": None, "effective_rank": None, "anisotropy": None}
        for name in cols:
            cols[name] = self.stat(name)
        rows = []
        for c, (ref, step) in enumerate(zip(self.refs, self.steps)):
            for li, layer in enumerate(self.layers):
                rows.append(
                    {
                        "checkpoint": ref,
                        "step": step,
                        "layer": layer,
                        "probe_accuracy": acc[c, li],
                        "probe_control": ctl[c, li],
                        "cka_to_final": self.cka_final[c, li],
                        "cka_to_previous": self.cka_previous[c, li],
                        **{k: v[c, li] for k, v in cols.items()},
                    }
                )
        return pd.DataFrame(rows)

    def behaviour_frame(self) -> pd.DataFrame:
        """One row per checkpoint: step, held-out loss, answer accuracy, best probe accuracy."""
        return pd.DataFrame(
            {
                "checkpoint": self.refs,
                "step": self.steps,
                "heldout_loss": self.behaviour_series("heldout_loss"),
                "answer_accuracy": self.behaviour_series("answer_accuracy"),
                "probe_accuracy_best_layer": self.best_probe,
            }
        )

    def to_dict(self) -> dict:
        def r(a, n=4):
            return np.round(np.asarray(a, dtype=np.float64), n).tolist()

        measured = [b for b in self.behaviour if b is not None]
        return {
            "set": self.request.set_name,
            "checkpoints": list(self.refs),
            "steps": list(self.steps),
            "layers": list(self.layers),
            "missing": list(self.missing),
            "probe_accuracy": r(self.probe_accuracy),
            "probe_control": r(self.probe_control),
            "probe_majority": r([p.majority for p in self.probes]),
            "probe_best_layer": [p.best_layer() for p in self.probes],
            "probe_decodable_layer": self.decodable_layer(),
            "behaviour": {
                "heldout_loss": r(self.behaviour_series("heldout_loss")),
                "answer_accuracy": r(self.behaviour_series("answer_accuracy")),
                "heldout_text": measured[0]["heldout_text"] if measured else None,
                "answers": next((b["answers"] for b in measured if "answers" in b), None),
                "missing": list(self.missing_behaviour),
            },
            "cka_to_final": r(self.cka_final),
            "cka_to_previous": r(self.cka_previous),
            "cka_units": self.request.cka_units,
            "n_cka_units": self.n_cka_units,
            "stats": {
                "massive_ratio": r(self.stat("massive_ratio"), 2),
                "max_abs": r(self.stat("max_abs")),
                "effective_rank": r(self.stat("effective_rank"), 3),
                "anisotropy": r(self.stat("anisotropy")),
            },
            "onsets": self.onsets(),
            "trajectory": {
                "layer": self.trajectory_layer,
                "method": self.trajectory.method,
                "n_prompts": int(self.trajectory.coords.shape[1]),
            },
        }


def _cka_units(store: Store, set_name: str, model_id: str, layers, units_: str):
    runs = units.set_runs_or_error(store, set_name, model_id)
    # the Similarity view's sample, drawn before reading
    x, meta = similarity.gather(store, runs, layers, units_, similarity.MAX_UNITS)
    return x, list(zip(meta["prompt_id"], meta["pos"]))


def _cka(store: Store, req: Request, ids: list[str], layers: list[int]):
    """CKA to the last checkpoint and to the previous one, reading one checkpoint at a time."""
    ref_x, ref_keys = _cka_units(store, req.set_name, ids[-1], layers, req.cka_units)
    final, previous, prev = [], [], None
    for mid in ids:
        x, keys = (ref_x, ref_keys) if mid == ids[-1] else _cka_units(
            store, req.set_name, mid, layers, req.cka_units
        )  # fmt: skip
        if keys != ref_keys:
            raise LayerScopeError(
                "The checkpoints' units differ (another tokenizer?): CKA needs the same tokens."
            )
        final.append(training_analysis.per_layer_cka(x, ref_x, layers))
        previous.append(
            np.full(len(layers), np.nan)
            if prev is None
            else training_analysis.per_layer_cka(x, prev, layers)
        )
        prev = x
    return np.stack(final), np.stack(previous), len(ref_keys)


def _trajectory(store: Store, req: Request, ids: list[str], layer: int, steps):
    xs, meta = [], None
    for mid in ids:
        runs = units.set_runs_or_error(store, req.set_name, mid)
        x, m = units.prompt_units(store, runs, [layer], req.pool)
        xs.append(x[0])
        meta = m if meta is None else meta
    return project(np.stack(xs), steps, "pca", dims=2), meta


def compute(store: Store, req: Request, lm=None) -> Result:
    """Every checkpoint that has the set's runs, in training order (LayerScopeError when fewer
    than two have)."""
    have, missing = coverage(store, req)
    refs = [r for r in req.checkpoints if r in have]
    if len(refs) < 2:
        raise LayerScopeError(
            f"Only {len(refs)} of {len(req.checkpoints)} checkpoints have activations of "
            f"'{req.set_name}'; extract them first (extract --checkpoints)."
        )
    ids = [have[r] for r in refs]
    steps = tuple(s for r, s in zip(req.checkpoints, req.steps) if r in have)
    layers = list(range(store.get_model(ids[-1])["n_layers"] + 1))
    probe_results = []
    for mid in ids:
        preq = probes.Request(
            model_id=mid, set_name=req.set_name, pool=req.pool, folds=req.folds, method=req.method
        )
        probe_results.append(probes.compute(store, preq).probe)
    layer_stats = tuple(
        stats.compute(
            store, stats.Request(model_id=mid, set_name=req.set_name, max_runs=req.max_runs)
        ).stats
        for mid in ids
    )
    cka_final, cka_prev, n_cka = _cka(store, req, ids, layers)
    layer = req.layer if req.layer is not None else probe_results[-1].best_layer()
    if layer not in layers:
        raise LayerScopeError(f"Layer {layer} is not in 0..{layers[-1]}.")
    traj, traj_meta = _trajectory(store, req, ids, layer, steps)
    return Result(
        request=req,
        refs=tuple(refs),
        steps=steps,
        model_ids=tuple(ids),
        layers=tuple(layers),
        probes=tuple(probe_results),
        stats=layer_stats,
        cka_final=cka_final,
        cka_previous=cka_prev,
        n_cka_units=n_cka,
        behaviour=tuple(behaviour_of(store, mid, req.set_name) for mid in ids),
        trajectory=traj,
        trajectory_meta=traj_meta,
        trajectory_layer=layer,
        missing=tuple(missing),
    )
