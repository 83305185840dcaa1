"""aelab: convolutional autoencoders for learning image representations with few labels.

Submodules, one per concern: :mod:`aelab.data`, :mod:`aelab.models`,
:mod:`aelab.training`, :mod:`aelab.clustering`, :mod:`aelab.anomaly`,
:mod:`aelab.viz`, :mod:`aelab.report` and :mod:`aelab.cli`. Importing
``aelab`` itself is cheap: heavy libraries load with the submodule that needs them.
"""

__version__ = "0.1.0"
