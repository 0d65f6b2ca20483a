"""What an extract job must compute: the plan both engines (local and Ray) share.

Torch-free: run ids come from ``backend.records``, so the Ray driver plans without PyTorch.
"""

from __future__ import annotations

from backend import models
from backend.errors import LayerScopeError
from backend.records import CaptureSettings, make_run_id
from backend.store import Store


def set_texts(store: Store, spec, texts: list[str] | None = None) -> list[str]:
    """The distinct texts a job reads: ``texts`` (not saved yet) or the set's, in order."""
    if texts is None:
        prompts = store.get_set(spec.set_name)
        if prompts.empty:
            raise LayerScopeError(f"The prompt set '{spec.set_name}' is empty or does not exist.")
        texts = prompts["text"].tolist()
    return list(dict.fromkeys(texts))


def extract_plan(store: Store, spec, texts: list[str] | None = None, repair: bool = False):
    """-> (model ref, capture settings, the set's distinct texts, missing [(run_id, text)]).

    ``repair`` (a job about to run, never a page estimate): runs whose Parquet shard file is
    missing, truncated or changed since it was registered are forgotten first
    (``Store.repair_shards``), so the job recomputes exactly those."""
    mref = models.resolve(spec.model)
    dtype = str(models.pick_dtype(spec.dtype, spec.device, model=mref)).removeprefix("torch.")
    settings = CaptureSettings(max_tokens=spec.max_tokens, dtype=dtype)
    texts = set_texts(store, spec, texts)
    if repair:
        store.repair_shards(mref.model_id)
    ids = [make_run_id(mref.model_id, t, settings.key()) for t in texts]
    have = store.existing_runs(ids)
    missing = [(i, t) for i, t in zip(ids, texts) if i not in have]
    return mref, settings, texts, missing
