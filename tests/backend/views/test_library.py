"""The Library view: what the cache holds, as the store reports it; the JSON is plain."""

import json

import numpy as np
import pandas as pd

from backend.store import Store
from backend.views import library
from tests.backend.views._fake import fake_info, fake_run


def test_models_sets_and_coverage_of_the_cache(tmp_path):
    with Store(tmp_path / "c.duckdb") as s:
        empty = library.compute(s, library.Request())
        assert empty.summary["runs"] == 0 and empty.models.empty
        json.dumps(empty.to_dict())
        s.upsert_model(fake_info(1, 2))
        runs = [fake_run(i, np.ones((2, 3, 2), np.float32)) for i in range(2)]
        s.ingest("m", runs)
        s.save_prompt_set("s", pd.DataFrame({"text": [r.text for r in runs]}))
        res = library.compute(s, library.Request())
        d = json.loads(json.dumps(res.to_dict()))
    assert d["summary"]["runs"] == 2 and d["summary"]["tokens"] == 6
    assert d["db"].endswith("c.duckdb") and "last_used" not in d["models"][0]
    assert [(m["ref"], m["n_runs"]) for m in d["models"]] == [("fake", 2)]
    assert d["models"][0]["bytes"] > 0
    assert [(x["set_name"], x["n_prompts"], x["has_labels"]) for x in d["sets"]] == [
        ("s", 2, False)
    ]
    assert [(c["set_name"], c["ref"], c["n_runs"]) for c in d["coverage"]] == [("s", "fake", 2)]
    assert res.to_frame().equals(res.coverage)
