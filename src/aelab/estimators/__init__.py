"""scikit-learn estimators for learning: the autoencoder as a transformer, the few-label classifier.

Both are thin faces over the tasks the command line runs (:mod:`aelab.tasks`):
``AutoencoderTransformer.fit`` runs ``aelab pretrain``'s task and
``FewLabelClassifier.fit`` that task and then ``aelab finetune --init``'s, so
they train the same weights from the same images, labels and seed. They work
in a :class:`~sklearn.pipeline.Pipeline`, with :func:`~sklearn.base.clone`
and ``GridSearchCV``, pickle for joblib (weights as safetensors bytes), and
save to a folder of safetensors and JSON.
"""

from aelab.estimators._autoencoder import AutoencoderTransformer
from aelab.estimators._fewlabel import FewLabelClassifier

__all__ = ["AutoencoderTransformer", "FewLabelClassifier"]
