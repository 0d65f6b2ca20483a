"""Trajectories page through AppTest on the demo model: methods, counts, UMAP as a job."""

import numpy as np
import pytest

from backend import models
from tests.pages.conftest import open_page, using_db, wait_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]


@pytest.fixture(scope="module")
def traj_db(tmp_path_factory):
    from backend.cli import main

    db = tmp_path_factory.mktemp("traj") / "t.duckdb"
    assert (
        main(["extract", "--db", str(db), "--model", "demo", "--set", "agreement", "--json"]) == 0
    )
    return db


@pytest.fixture
def env(traj_db, monkeypatch):
    yield from using_db(traj_db, monkeypatch)


def ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def chart(at, i=0):
    import json

    return json.loads(at.get("plotly_chart")[i].proto.spec)


def arr(v):
    """A plotly JSON array, plain or typed (base64)."""
    from base64 import b64decode

    if isinstance(v, dict):
        return np.frombuffer(b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


def test_pca_prompt_view_counts_points_and_labels(env):
    at = open_page("trajectories", {"model": "demo", "set": "agreement"})
    ok(at)
    assert any(
        "400 prompt units × 5 layers = 2,000 points, all drawn" in c.value for c in at.caption
    )
    fig = chart(at)
    names = {t.get("name") for t in fig["data"] if t.get("mode") == "markers"}
    assert names == {"singular", "plural"}
    assert len(fig["frames"]) == 5 and "2,000 points" in fig["layout"]["title"]["text"]
    sil = chart(at, 1)  # the separation chart: one value per layer
    assert [len(t["x"]) for t in sil["data"]] == [5, 5]


def test_token_units_layer_range_3d(env):
    at = open_page(
        "trajectories",
        {
            "model": "demo",
            "set": "agreement",
            "unit": "token",
            "layers": "1:3",
            "dims": "3",
            "color": "token",
            "nruns": "5",
        },
    )
    ok(at)
    fig = chart(at)
    assert all(t["type"] == "scatter3d" for t in fig["data"])
    assert [f["name"] for f in fig["frames"]] == ["1", "2", "3"]
    cap = next(c.value for c in at.caption if "token units × 3 layers" in c.value)
    n_units = int(cap.split(" ")[0].replace(",", ""))
    markers = [t for t in fig["data"] if t.get("mode") == "markers"]
    ids = np.concatenate([arr(t["customdata"]) for t in markers])
    assert sorted(ids.astype(int)) == list(range(n_units)) and n_units > 5  # none dropped
    assert any(t["name"].startswith("other (") for t in markers) or len(markers) <= 12


def test_umap_runs_as_a_job_then_comes_from_the_store_cache(env):
    from pages import _ui

    q = {"model": "demo", "set": "agreement", "method": "umap", "layers": "3:4"}
    at = open_page("trajectories", q)
    ok(at)
    assert not _ui.worker().active_jobs(), "opening a link must not start work"
    assert any("not cached" in i.value for i in at.info)
    at.button(key="traj_start").click().run()
    ok(at)
    assert any("Computing umap in the background" in i.value for i in at.info)
    assert "pca" in chart(at)["layout"]["title"]["text"]  # PCA meanwhile
    wait_jobs(300)
    at.run()
    ok(at)
    assert "umap" in chart(at)["layout"]["title"]["text"]
    s = _ui._root_store(str(env)).cursor()  # the app holds the file: use its instance
    n = s.con.execute("SELECT count(*) FROM derived WHERE kind = 'trajectories'").fetchone()[0]
    assert n == 1
    again = open_page("trajectories", q)  # a new session: straight from the cache, no job
    ok(again)
    assert not again.info and "umap" in chart(again)["layout"]["title"]["text"]


def test_cli_prints_the_same_coordinates_as_the_page(env, capsys):
    import json

    from backend.cli import main

    at = open_page("trajectories", {"model": "demo", "set": "agreement", "layers": "2:4"})
    ok(at)
    fig = chart(at)
    capsys.readouterr()
    assert (
        main(
            [
                "project",
                "--db",
                str(env),
                "--model",
                "demo",
                "--set",
                "agreement",
                "--layers",
                "2:4",
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    last = {p["unit"]: (p["x"], p["y"]) for p in r["points"] if p["layer"] == 4}
    assert r["explained_variance"] and len(last) == 400
    tr = next(t for t in fig["data"] if t.get("mode") == "markers")
    units = [u["unit"] for u in r["units"]]
    want = [last[units[int(i)]][0] for i in arr(tr["customdata"])]
    np.testing.assert_allclose(arr(tr["x"]), want, rtol=1e-5)
