"""LayerScope's pages, routed by app.py with st.navigation.

Streamlit treats a folder named ``pages/`` next to the entry point as a legacy (v1) multipage
app until ``st.navigation`` has run once in the process: a first visitor arriving on a deep
link (``/similarity?...``) would get the page without app.py's navigation and page config.
This guard switches the process to app.py's navigation and reruns, so permalinks work from a
fresh server start.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

if PagesManager.uses_pages_directory:
    PagesManager.uses_pages_directory = False
    st.rerun()
