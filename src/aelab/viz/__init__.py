"""Pure plotting functions: arrays in, :class:`matplotlib.figure.Figure` out.

No function here touches pyplot's global state or writes files, except
:func:`save_figure`, which writes atomically. Figures become PNG bytes or an
HTML-ready data URI with :func:`figure_to_png_bytes` / :func:`figure_to_data_uri`.
:func:`layer_table` (torch) and :func:`embed_2d` (openTSNE, scikit-learn) import
their heavy libraries only when called.
"""

from aelab.viz._figure import figure_to_data_uri, figure_to_png_bytes, image_format, save_figure
from aelab.viz.clusters import cluster_map, cluster_panels
from aelab.viz.curves import confusion_matrix_plot, roc_curve_plot, score_histogram, training_curves
from aelab.viz.embedding import MissingDependencyError, embed_2d
from aelab.viz.images import error_maps, image_grid
from aelab.viz.latent import latent_map, latent_panels
from aelab.viz.summary import layer_table

__all__ = [
    "MissingDependencyError",
    "cluster_map",
    "cluster_panels",
    "confusion_matrix_plot",
    "embed_2d",
    "error_maps",
    "figure_to_data_uri",
    "figure_to_png_bytes",
    "image_format",
    "image_grid",
    "latent_map",
    "latent_panels",
    "layer_table",
    "roc_curve_plot",
    "save_figure",
    "score_histogram",
    "training_curves",
]
