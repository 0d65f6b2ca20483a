"""`delete`: remove a prompt set (and runs only it uses) or all runs of a model."""

from __future__ import annotations

from backend import catalog
from backend.errors import LayerScopeError

HELP = "delete a prompt set (--set) or every run of a model (--model)"


def register(p) -> None:
    p.add_argument("--set", dest="set_name")
    p.add_argument("--model")


def run(args, store) -> dict:
    if bool(args.set_name) == bool(args.model):
        raise LayerScopeError("Give exactly one of --set NAME or --model REF.")
    before = store.summary()
    try:
        if args.set_name:
            if args.set_name not in set(store.list_sets()["set_name"]):
                raise LayerScopeError(f"No prompt set '{args.set_name}' in the cache.")
            store.delete_set(args.set_name)
        else:
            store.delete_model_runs(catalog.model_id_for(store, args.model))
    except LayerScopeError as e:
        if "is full" not in str(e):
            raise
        raise LayerScopeError(
            f"The disk holding {store.path} is full, and even a delete needs a little room to "
            "log the change. Free a few MB on that disk and run delete again; or, to drop the "
            f"whole cache, stop the app and remove {store.path} and {store.path}.wal."
        ) from None
    after = store.summary()
    return {
        "deleted_runs": before["runs"] - after["runs"],
        "freed_activation_bytes": before["activation_bytes"] - after["activation_bytes"],
    }
