"""A sphinx-gallery image scraper for the figures ``aelab.viz`` returns.

``aelab.viz`` builds :class:`matplotlib.figure.Figure` objects without pyplot
(no global state), so sphinx-gallery's own matplotlib scraper, which asks
pyplot for its open figures, never sees them. This scraper saves every Figure
that a gallery example holds in a top-level variable and that has not been
shown yet, after the code block that made it.
"""

from __future__ import annotations

import weakref
from typing import Any

from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

_shown: weakref.WeakSet[Figure] = weakref.WeakSet()


def viz_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """Save the example's new top-level Figures as the block's images; their reST."""
    paths = []
    for value in list(block_vars["example_globals"].values()):
        if isinstance(value, Figure) and value not in _shown:
            _shown.add(value)
            path = next(block_vars["image_path_iterator"])
            value.savefig(path, dpi=100, bbox_inches="tight")
            paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
