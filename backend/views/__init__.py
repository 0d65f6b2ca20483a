"""One module per view: a frozen Request in, a frozen Result out, shared by page and CLI.

``VIEWS`` is the one registry of views: the CLI (``backend/commands``) and the pages
(``pages/_ui.compute``) find a view here by its feature name, never by an import string. A
view module exports ``Request`` (frozen, keyword-only), ``Result`` (``to_dict()``, and
``to_frame()`` where tabular) and ``compute(store, request, lm=None)``;
``tests/backend/views/test_contract.py`` checks every entry.
"""

from __future__ import annotations

from types import ModuleType

from backend.views import (
    attention,
    attribution,
    features,
    generation,
    lens,
    library,
    patching,
    probes,
    prompt,
    similarity,
    stats,
    steering,
    training,
    trajectories,
)

#: feature name -> view module; the name is the page's, the CLI verb's and the test file's
VIEWS: dict[str, ModuleType] = {
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
    "library": library,
    "features": features,
}
