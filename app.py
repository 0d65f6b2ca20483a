"""LayerScope: see how every token's hidden state moves through a transformer's layers."""

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="LayerScope", page_icon=":material/layers:", layout="wide")

PAGES = {
    "Start": [
        ("run.py", "Run", ":material/play_circle:", "run"),
        ("library.py", "Library", ":material/inventory_2:", "library"),
        ("prompt.py", "Prompt", ":material/notes:", "prompt"),
        ("tour.py", "Tour", ":material/school:", "tour"),
    ],
    "Views": [
        ("trajectories.py", "Trajectories", ":material/timeline:", "trajectories"),
        ("similarity.py", "Similarity", ":material/grid_on:", "similarity"),
        ("probes.py", "Probes", ":material/target:", "probes"),
        ("lens.py", "Logit lens", ":material/search:", "lens"),
        ("stats.py", "Layer stats", ":material/monitoring:", "stats"),
        ("generation.py", "Generation", ":material/casino:", "generation"),
        ("patching.py", "Patching", ":material/healing:", "patching"),
        ("attention.py", "Attention", ":material/visibility:", "attention"),
        ("attribution.py", "Attribution", ":material/account_tree:", "attribution"),
        ("steering.py", "Steering", ":material/explore:", "steering"),
        ("training.py", "Training", ":material/model_training:", "training"),
        ("features.py", "Features", ":material/scatter_plot:", "features"),
    ],
}
HERE = Path(__file__).parent / "pages"
nav = {
    section: [
        st.Page(f"pages/{f}", title=t, icon=i, url_path=u, default=(u == "run"))
        for f, t, i, u in items
        if (HERE / f).exists()
    ]
    for section, items in PAGES.items()
}
page = st.navigation(nav)
st.session_state["_ls_page_title"] = page.title  # heads the page's one-file report
page.run()
