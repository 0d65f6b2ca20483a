"""Trajectory projections from the store, shared by the Trajectories page, the `project` CLI
command and the worker's ``project`` job kind.

UMAP results are cached in the store (``derived`` table, kind ``projection``) keyed by a hash
of every input, so reopening a view is instant and the CLI prints the same coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from backend import derived
from backend.analysis.projection import (  # noqa: F401  (DESCRIPTIONS: re-exported for the page)
    DESCRIPTIONS,
    METHODS,
    Projection,
    neighbour_agreement_per_layer,
    project,
    silhouette_per_layer,
)
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

log = logging.getLogger(__name__)

SLOW_METHODS = ("umap", "aligned-umap")  #: run as worker jobs in the app, cached in the store
MAX_POINTS = 100_000  #: above this the view asks for a sample of units
CACHE_KIND = "trajectories"  #: UMAP coordinates (the old kind "projection" is not read)
UNITS = ("prompt", "token")
POOLS = ("last", "mean")


@dataclass(frozen=True, kw_only=True)
class Request:
    """Everything that decides a projection's coordinates."""

    model_id: str
    set_name: str
    layers: tuple[int, ...]
    method: str = "pca"
    unit: str = "prompt"  #: prompt (pooled per layer) | token
    pool: str = "last"  #: prompt units: last | mean
    dims: int = 2
    standardize: bool = True  #: standardise each layer first (norms grow with depth)
    max_runs: int = 20  #: token units: the first N prompts of the set
    sample: int | None = None  #: keep this many units (seeded) when there are too many
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise LayerScopeError(f"Unknown method '{self.method}': use {', '.join(METHODS)}.")
        if self.unit not in ("prompt", "token"):
            raise LayerScopeError(f"Unknown unit '{self.unit}': use prompt or token.")
        if not self.layers:
            raise LayerScopeError("Choose at least one layer.")

    def units_only(self) -> Request:
        """The same units with default projection settings (key for the loaded vectors)."""
        return replace(self, method="pca", dims=2, standardize=True)


def load_units(store: Store, req: Request) -> tuple[np.ndarray, pd.DataFrame, int]:
    """-> x (n_layers_sel, n_units, d_model), unit table (run_id, idx, text, label, group, pos,
    token), and the number of units before sampling."""
    runs = units.set_runs_or_error(store, req.set_name, req.model_id)
    layers = list(req.layers)
    if req.unit == "prompt":
        x, meta = units.prompt_units(store, runs, layers, req.pool)
        n_all = x.shape[1]
        keep = _sample(req, n_all)
        if keep is not None:
            x, meta = x[:, keep], meta.iloc[keep].reset_index(drop=True)
        return x, meta, n_all
    # token units: the sample is drawn from the token table, then only it is read
    picked = units.with_token_labels(store, req.set_name, runs.head(req.max_runs))
    meta = units.token_table(store, picked)
    n_all = len(meta)
    keep = _sample(req, n_all)
    if keep is not None:
        meta = meta.iloc[keep].reset_index(drop=True)
    return units.read_tokens(store, meta["run_id"].tolist(), meta["pos"], layers), meta, n_all


def _sample(req: Request, n_all: int) -> np.ndarray | None:
    """Sorted indices of the request's seeded sample of ``n_all`` units, or None (all)."""
    if req.sample is None or req.sample >= n_all:
        return None
    return np.sort(np.random.default_rng(req.seed).choice(n_all, req.sample, replace=False))


def cache_key(req: Request, meta: pd.DataFrame) -> str:
    """Hash of the request and of the exact units (run ids and positions)."""
    return derived.key(req, meta[["run_id", "pos"]])


def cached(store: Store, req: Request, meta: pd.DataFrame) -> Projection | None:
    got = derived.load(store, CACHE_KIND, cache_key(req, meta), projection=Projection)
    return got["projection"] if got else None


def project_units(
    store: Store,
    req: Request,
    x: np.ndarray | None = None,
    meta: pd.DataFrame | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[Projection, pd.DataFrame]:
    """The projection for ``req`` (from the store cache when there), with its unit table.
    Slow methods are written to the cache."""
    if x is None or meta is None:
        x, meta, _ = load_units(store, req)
    if req.method in SLOW_METHODS:
        hit = cached(store, req, meta)
        if hit is not None:
            return hit, meta
    try:
        proj = project(
            x, req.layers, req.method, req.dims, req.standardize, req.seed, progress=progress
        )
    except ValueError as e:
        raise LayerScopeError(str(e)) from None
    if req.method in SLOW_METHODS:
        derived.save(store, CACHE_KIND, cache_key(req, meta), derived.pack(projection=proj))
    return proj, meta


def unit_ids(meta: pd.DataFrame) -> list[str]:
    """run id for prompt units, run id:position for token units."""
    return [r if p < 0 else f"{r}:{p}" for r, p in zip(meta["run_id"], meta["pos"])]


@dataclass(frozen=True, kw_only=True)
class Result:
    """A projection with its units and the labels' separation in the model's own space."""

    request: Request
    projection: Projection
    meta: pd.DataFrame  #: one row per unit: run_id, idx, text, label, group, pos, token
    silhouette: np.ndarray | None  #: (n_layers_sel,) cosine silhouette of the labels, or None
    agreement: np.ndarray | None = None  #: (n_layers_sel,) same-label share of 10 neighbours
    chance: float | None = None  #: what ``agreement`` would be for random labels
    n_available: int | None = None  #: units before the request's sample

    @property
    def notice(self) -> str | None:
        """How the units were sampled when the set had more than ``units.MAX_UNITS``."""
        return units.notice_of(self.meta)

    def to_frame(self) -> pd.DataFrame:
        """One row per (unit, layer) point with its coordinates."""
        p, axes = self.projection, "xyz"[: self.projection.dims]
        ids = unit_ids(self.meta)
        rows = {
            "unit": np.tile(ids, len(p.layers)),
            "layer": np.repeat(p.layers, p.n_units),
        }
        for a_i, a in enumerate(axes):
            rows[a] = p.coords[:, :, a_i].ravel()
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        p, ev = self.projection, self.projection.explained_variance
        table = self.meta.assign(unit=unit_ids(self.meta))[
            ["unit", "run_id", "pos", "token", "label", "group", "text"]
        ]
        return {
            "method": p.method,
            "description": p.description,
            "unit": self.request.unit,
            "layers": list(p.layers),
            "n_units": p.n_units,
            "n_points": p.n_points,
            **({"notice": self.notice} if self.notice else {}),
            "explained_variance": None if ev is None else np.round(ev, 6).tolist(),
            "silhouette": None
            if self.silhouette is None
            else np.round(self.silhouette, 4).tolist(),
            "neighbour_agreement": None
            if self.agreement is None
            else np.round(self.agreement, 4).tolist(),
            "chance": None if self.chance is None else round(self.chance, 4),
            "points": self.to_frame().to_dict("records"),
            "units": table.astype(object).where(table.notna(), None).to_dict("records"),
        }


def compute(store: Store, req: Request, lm=None) -> Result:
    """The projection of ``req`` and, when the units carry two or more labels, their
    silhouette and nearest-neighbour agreement per layer in the model's space."""
    x, meta, n_all = load_units(store, req)
    proj, meta = project_units(store, req, x, meta)
    lab = meta["label"].fillna("").astype(str).to_numpy()
    sil = agree = chance = None
    if 1 < len(set(lab)) < len(lab):  # all-distinct labels separate nothing
        sil = silhouette_per_layer(x, lab)
        agree, chance = neighbour_agreement_per_layer(x, lab)
    return Result(
        request=req,
        projection=proj,
        meta=meta,
        silhouette=sil,
        agreement=agree,
        chance=chance,
        n_available=n_all,
    )


def count_units(store: Store, req: Request) -> int:
    """The number of units ``req`` would gather before its own sample (what
    ``Result.n_available`` will say), without reading a vector."""
    runs = units.set_runs_or_error(store, req.set_name, req.model_id)
    if req.unit == "prompt":
        return min(len(runs), units.MAX_UNITS)
    picked = units.with_token_labels(store, req.set_name, runs.head(req.max_runs))
    return len(units.token_table(store, picked))


# -- worker job (backend/jobs/trajectories.py): ``JobSpec(kind="trajectories", options=...)``
def job_spec_options(req: Request) -> dict:
    return {**asdict(req), "layers": list(req.layers)}
