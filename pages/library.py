"""Library page: what the cache holds, sizes on disk, delete and export."""

import tempfile
from pathlib import Path

import streamlit as st

from backend.budget import human_bytes
from backend.prompts import slug
from backend.views import library
from pages import _ui

st.title("Library")
s = _ui.store()
view = library.compute(s, library.Request())  # not cached: the page deletes and adds
summ = view.summary
c = st.columns(4)
c[0].metric("Runs", f"{summ['runs']:,}")
c[1].metric("Tokens", f"{summ['tokens']:,}")
c[2].metric("Activations", human_bytes(summ["activation_bytes"]))
c[3].metric("Cache file", human_bytes(summ["file_bytes"]))
st.caption(f"Cache: `{view.path}` (set `LAYERSCOPE_DB` to move it)")

mdf = view.models
st.subheader("Models")
if mdf.empty:
    st.info("No models in the cache yet: start on the Run page.")
else:
    show = mdf.assign(size=mdf["bytes"].map(human_bytes))[
        ["ref", "architecture", "n_layers", "d_model", "n_runs", "size", "model_id"]
    ]
    st.dataframe(show, hide_index=True)

st.subheader("Prompt sets")
sets, cov = view.sets, view.coverage
if sets.empty:
    st.info("No prompt sets yet.")
else:
    st.dataframe(
        sets[["set_name", "n_prompts", "has_labels", "has_token_labels", "description"]],
        hide_index=True,
    )
    if not cov.empty:
        st.caption("Runs per set and model")
        st.dataframe(cov, hide_index=True)

st.subheader("Export")
if not cov.empty:
    pairs = [f"{r.set_name} · {r.ref}" for r in cov.itertuples()]
    pick = st.selectbox("Set and model", pairs, key="lib_export_pick")
    row = cov.iloc[pairs.index(pick)]
    info = s.get_model(row["model_id"])
    layer = st.selectbox("Layer", ["all"] + list(range(info["n_layers"] + 1)), key="lib_layer")
    if st.button("Prepare Parquet", key="lib_prepare"):
        out = Path(tempfile.mkdtemp()) / f"{slug(row['set_name'])}.parquet"  # never the raw name
        s.export_parquet(
            row["set_name"], row["model_id"], out, layer=None if layer == "all" else int(layer)
        )
        st.session_state["lib_parquet"] = (out.name, out.read_bytes())
    if "lib_parquet" in st.session_state:
        name, data = st.session_state["lib_parquet"]
        st.download_button(
            f"Download {name} ({human_bytes(len(data))})",
            data,
            name,
            mime="application/octet-stream",
            key="lib_dl_parquet",
        )
    meta = s.set_runs(row["set_name"], row["model_id"])
    st.download_button(
        "Download metadata (CSV)",
        _ui.csv_bytes(meta),
        f"{row['set_name']}-runs.csv",
        mime="text/csv",
        key="lib_dl_csv",
    )

st.subheader("Delete")
st.caption("Deleting frees the rows; runs of other sets that share prompts are kept.")
d1, d2 = st.columns(2)
with d1:
    if not sets.empty:
        victim = st.selectbox("Prompt set", sets["set_name"], key="lib_del_set")
        sure = st.checkbox(f"Yes, delete set '{victim}' and its runs", key="lib_del_set_ok")
        if st.button("Delete set", disabled=not sure, key="lib_del_set_btn"):
            s.delete_set(victim)
            st.success(f"Deleted {_ui.md(victim)}.")
            st.rerun()
with d2:
    if not mdf.empty:
        mv = st.selectbox("Model", mdf["ref"], key="lib_del_model")
        sure_m = st.checkbox(f"Yes, delete every run of '{mv}'", key="lib_del_model_ok")
        if st.button("Delete model runs", disabled=not sure_m, key="lib_del_model_btn"):
            s.delete_model_runs(mdf.loc[mdf["ref"] == mv, "model_id"].iloc[0])
            st.success(f"Deleted the runs of {_ui.md(mv)}.")
            st.rerun()
