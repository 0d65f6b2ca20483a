"""One module per CLI verb; ``COMMANDS`` is their registry (explicit imports, no strings).

A command module exports ``HELP``, ``register(parser)``, ``run(args, store) -> dict`` and
optionally ``prose(dict) -> str``. A view's command carries the view's name."""

from __future__ import annotations

from types import ModuleType

from backend.commands import (
    attention,
    attribution,
    delete,
    export,
    extract,
    features,
    generation,
    jobs,
    lens,
    ls,
    patching,
    probes,
    prompt,
    similarity,
    stats,
    steering,
    training,
    trajectories,
)

#: verb -> command module, in the order `--help` lists them
COMMANDS: dict[str, ModuleType] = {
    "extract": extract,
    "ls": ls,
    "export": export,
    "delete": delete,
    "jobs": jobs,
    "trajectories": trajectories,
    "similarity": similarity,
    "probes": probes,
    "lens": lens,
    "stats": stats,
    "generation": generation,
    "patching": patching,
    "attention": attention,
    "attribution": attribution,
    "steering": steering,
    "training": training,
    "prompt": prompt,
    "features": features,
}
