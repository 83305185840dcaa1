"""
Pre-train an autoencoder and map its latent space
=================================================

:class:`~aelab.estimators.AutoencoderTransformer` is aelab's autoencoder as a
scikit-learn transformer: ``fit(X)`` pre-trains it on images without labels
(the task ``aelab pretrain`` runs), ``transform(X)`` returns each image's
latent vector, ``inverse_transform(Z)`` decodes latent vectors back to images,
and ``score_samples(X)`` gives each image's reconstruction error.

Here it learns from 1,500 images of the Fashion-MNIST subset bundled with
aelab, with a short schedule: the half-width model ``convae_fmnist_small``
(2 M parameters, 32x32, a 256-dimensional latent), **3 epochs** at the
default learning rate, on the CPU. That takes well under a minute on two
cores; the real thing (``aelab pretrain``) runs 10 epochs over 60,000 images.
"""

# %%
# The images
# ----------
# The subset ships inside the package (3,000 training and 1,000 test images,
# 300 and 100 of each class, 28x28 uint8). The estimators take images as an
# array of shape (n_images, height, width[, channels]), uint8 or floats in
# [0, 1]; they are resized to the model's 32x32.
import numpy as np

from aelab.data.fashion_mnist import BUNDLED_PATH, CLASS_NAMES

with np.load(BUNDLED_PATH) as subset:
    X_train, y_train = subset["x_train"][:1500], subset["y_train"][:1500]
    X_test, y_test = subset["x_test"][:500], subset["y_test"][:500]
print(X_train.shape, X_train.dtype, np.bincount(y_train))

# %%
# Pre-train
# ---------
# No labels: the autoencoder learns to reconstruct the images. 5 % of them are
# held out to monitor the reconstruction loss (``pretrain__val_fraction``);
# any other setting of :class:`aelab.tasks.PretrainOptions` is reachable the
# same way, with the prefix ``pretrain__`` (``model__`` for the model's own).
from aelab.estimators import AutoencoderTransformer

ae = AutoencoderTransformer(model="convae_fmnist_small", epochs=3, device="cpu", random_state=0)
ae.fit(X_train)
for row in ae.history_:
    print(
        f"epoch {row['epoch']:.0f}: train loss {row['train_loss']:.4f}, held-out {row['val_loss']:.4f}"
    )

# %%
# Latent vectors and their map
# ----------------------------
# ``transform`` encodes the 500 test images the model never saw. A t-SNE map
# of the 256-dimensional vectors (:func:`aelab.viz.embed_2d`), coloured by
# the true class, shows what the encoder learned without a single label:
# trousers, bags and footwear stand apart, the upper-body garments overlap.
import matplotlib.pyplot as plt

from aelab.viz import embed_2d

Z = ae.transform(X_test)
print("latents:", Z.shape, Z.dtype)
xy, _ = embed_2d(Z, method="tsne", random_state=0)

fig, ax = plt.subplots(figsize=(7.5, 5.5), layout="constrained")
for c, name in enumerate(CLASS_NAMES):
    ax.scatter(*xy[y_test == c].T, s=8, label=name)
ax.set(xticks=[], yticks=[], title="t-SNE of the test latents, coloured by true class")
ax.legend(fontsize=8, markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")

# %%
# Reconstructions
# ---------------
# ``inverse_transform`` decodes latent vectors: the originals above, their
# reconstructions below. Three epochs already give the shapes; details come
# with longer training.
from aelab.viz import image_grid

recon = ae.inverse_transform(Z[:8])
fig_recon = image_grid(
    [X_test[:8], recon],
    row_titles=["original", "reconstructed"],
    col_titles=[CLASS_NAMES[c] for c in y_test[:8]],
)
print("reconstruction error of each:", ae.score_samples(X_test[:8]).round(4))

# %%
# In a pipeline
# -------------
# The transformer fits in a scikit-learn pipeline like any other: for
# example, pre-train and cluster the latent vectors with
# :class:`~aelab.clustering.EquilibriumKMeans` in one call (not run here; it
# trains a second autoencoder):
#
# .. code-block:: python
#
#     from sklearn.pipeline import make_pipeline
#     from aelab.clustering import EquilibriumKMeans
#
#     pipe = make_pipeline(AutoencoderTransformer(epochs=1), EquilibriumKMeans(3))
#     labels = pipe.fit_predict(X_train)
#
# ``AutoencoderTransformer.save(folder)`` writes the fitted model as
# safetensors and JSON, and ``AutoencoderTransformer.load(folder)`` reads it
# back; nothing is pickled.
