"""LayerScope: see how every token's hidden state moves through a transformer's layers."""

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="LayerScope", page_icon="🔭", layout="wide")

PAGES = {
    "Start": [("run.py", "Run", "▶️", "run"), ("library.py", "Library", "🗄️", "library"),
              ("prompt.py", "Prompt", "🔤", "prompt"), ("tour.py", "Tour", "🎓", "tour")],
    "Views": [("trajectories.py", "Trajectories", "🌀", "trajectories"),
              ("similarity.py", "Similarity", "🟦", "similarity"),
              ("probes.py", "Probes", "🎯", "probes"), ("lens.py", "Logit lens", "🔍", "lens"),
              ("stats.py", "Layer stats", "📈", "stats"),
              ("generation.py", "Generation", "🎲", "generation")],
}
HERE = Path(__file__).parent / "pages"
nav = {
    section: [st.Page(f"pages/{f}", title=t, icon=i, url_path=u, default=(u == "run"))
              for f, t, i, u in items if (HERE / f).exists()]
    for section, items in PAGES.items()
}
st.navigation(nav).run()
