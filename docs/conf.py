"""Sphinx configuration: the jupyter_transports documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

import jupyter_transports  # noqa: E402

project = "jupyter_transports"
author = "the jupyter_transports authors"
copyright = "the jupyter_transports authors, BSD-3-Clause"
release = version = jupyter_transports.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "transports_docs",  # _ext/: the configuration table and the REST reference, made from code
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # #anchors for headings, as GitHub makes them
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures say enough; the types are in the source

html_theme = "pydata_sphinx_theme"
html_title = "jupyter_transports"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 4,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": []}

# The contract's wire examples are JSON with "…" elisions: Pygments then highlights them
# leniently, and says so; nothing is lost.
suppress_warnings = ["misc.highlighting_failure"]
