"""LayerScope: see how every token's hidden state moves through a transformer's layers."""

from pathlib import Path

import streamlit as st

from pages import _ui

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
DEFAULT = "run"  #: the page served at "/"


def _page(f: str, t: str, i: str, u: str):
    if u == DEFAULT:  # at "/": Streamlit ignores its url_path but names the page by its hash
        return st.Page(f"pages/{f}", title=t, icon=i, url_path="start", default=True)
    return st.Page(f"pages/{f}", title=t, icon=i, url_path=u)


nav = {
    section: [_page(*item) for item in items if (HERE / item[0]).exists()]
    for section, items in PAGES.items()
}
# "/run", a link users type or keep, opens the same page: a hidden twin (page links to
# pages/run.py name the first one registered, the visible default)
nav["Start"].append(st.Page("pages/run.py", title="Run", url_path=DEFAULT, visibility="hidden"))
page = st.navigation(nav, expanded=True)  # every view listed (collapsed after 10 by default)
_ui.replace_history()  # query-string writes replace the history entry: Back leaves the page
st.session_state["_ls_page_title"] = page.title  # heads the page's one-file report
try:
    page.run()
finally:  # once the first page has drawn: PyTorch and the demo model, in the background
    _ui.start_warm_up()
