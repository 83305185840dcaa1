"""Sphinx configuration of aelab's documentation (``make docs``).

The pages are Markdown (MyST) beside this file; the command reference is
generated from the typer app (sphinxcontrib-typer: typer >= 0.26 vendors its
own click, which sphinx-click does not recognise), the API
reference from the docstrings (autosummary + numpydoc), and the gallery by
running ``examples/plot_*.py`` (sphinx-gallery): an example that fails fails
the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The checkout's own sources, ahead of any installed aelab, and _gallery.py beside this file.
sys.path[:0] = [str(ROOT / "src"), str(HERE)]
# The gallery draws with matplotlib's file backend; no display is needed.
os.environ.setdefault("MPLBACKEND", "agg")

from aelab import __version__  # noqa: E402

project = "aelab"
author = "the aelab authors"
copyright = "the aelab authors, BSD-3-Clause"  # noqa: A001
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinxcontrib.typer",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# --- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False  # a package documents what its __all__ names
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc sections say the types, in words
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
# Type words in the docstrings ("array-like of shape (n, d)", "path") are prose, not references.
numpydoc_xref_param_type = False

# No intersphinx: the build reads nothing from the network, so it passes offline.

# --- Gallery -----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("aelab",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
    # aelab.viz returns Figures without pyplot: _gallery.viz_figures shows them.
    "image_scrapers": ("matplotlib", "_gallery.viz_figures"),
}

# --- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"aelab {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
html_show_sourcelink = False


def _skip_member(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool:
    """Leave out the ``set_*_request`` methods scikit-learn adds to every estimator.

    They are metadata-routing plumbing, documented by scikit-learn; their
    docstrings refer to scikit-learn's glossary, which this site does not have.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_member)  # type: ignore[attr-defined]
