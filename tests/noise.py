"""Tolerances for results that differ only by float rounding, and where each comes from.

Two runs of the same training that differ only in how floats are rounded (two
processes against one, AVX-512 kernels against AVX2 ones, a batch of 8 against
a batch of 16 in oneDNN's convolutions) drift apart as the optimizer amplifies
the rounding. A tolerance for such a comparison is not taken from one passing
run on one CPU: ``benchmarks/noise_bound.py`` runs the tests marked
``numerics`` with ``AELAB_NOISE_LOG`` set, natively and under the AVX2
variables (``ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
ATEN_CPU_CAPABILITY=avx2``), and records for every comparison its largest
deviation in ``benchmarks/results_noise_bound.json``. Each tolerance below states
the largest deviation measured there, on both instruction sets, and is a safety
factor of at least 4 above it (and above what a user reported from another CPU,
where one is known).

A deviation is reported as the share of the tolerance it uses:
``max(|got - want| / (atol + rtol * |want|))``; 1.0 is the limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TOLERANCES", "Tolerance", "near"]


@dataclass(frozen=True)
class Tolerance:
    """``|got - want| <= atol + rtol * |want|`` elementwise; ``measured``: where it comes from."""

    rtol: float
    atol: float
    measured: str


# The figures in ``measured`` are the largest deviations in benchmarks/results_noise_bound.json
# (`python benchmarks/noise_bound.py`: both instruction sets, every test that uses the key; an
# Intel Xeon with AVX-512 and AMX), and one a user reported from an AMD EPYC with AVX-512.
TOLERANCES: dict[str, Tolerance] = {
    # Weights after 2-3 epochs of AdamW, two processes against one (BN-cancelled biases skipped).
    "weights": Tolerance(
        2e-4, 2e-5, "largest |diff| 2.2e-6 (AVX2), 1.6e-6 (AVX-512): <= 0.11 of it"
    ),
    # Reconstructions with batch statistics from those weights.
    "outputs": Tolerance(2e-4, 2e-5, "largest |diff| 1.5e-6 on both"),
    # The mean training loss of an epoch (the same images, summed in another order).
    "train_loss": Tolerance(1e-5, 0.0, "largest relative diff 8e-8 on both"),
    # Validation on running statistics, which carry the cancelled biases' noise.
    "val_loss": Tolerance(5e-3, 0.0, "largest relative diff 8.9e-4 (AVX-512), 5.5e-4 (AVX2)"),
    # Anomaly scores (mse+latent, each standardised on the training scores, so the spread
    # is about 1): standardising divides tiny weight noise by a small spread.
    "scores": Tolerance(
        0.0,
        0.35,
        "largest |diff| 0.077 (AVX-512 here), 0.045 (AMD AVX-512, issue #20), 0.034 (AVX2)",
    ),
    # Latent codes of the same images from the same weights, encoded in other batches or from
    # another buffer (MKL's and oneDNN's AVX2 kernels round with the data's alignment).
    "encode": Tolerance(1e-5, 5e-6, "largest |diff| 8.3e-7 (AVX2; 0 on AVX-512 here)"),
    # The fpr threshold: an order statistic of those scores.
    "threshold": Tolerance(0.0, 0.15, "largest |diff| 0.026 (AVX2), 0.0005 (AVX-512)"),
}


def _as_array(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def near(name: str, got: object, want: object, key: str) -> float:
    """Assert ``got`` is within ``TOLERANCES[key]`` of ``want``; return the share used.

    With ``AELAB_NOISE_LOG=FILE`` set, the deviation is appended to FILE as a
    JSON line (the test, the key, the name, the largest absolute deviation and
    the share of the tolerance); with ``AELAB_NOISE_MEASURE=1`` too, nothing is
    asserted, so one run measures every comparison of a test.
    """
    tol = TOLERANCES[key]
    g, w = _as_array(got), _as_array(want)
    assert g.shape == w.shape, (name, g.shape, w.shape)
    assert np.isfinite(g).all() and np.isfinite(w).all(), name
    diff = np.abs(g - w)
    share = float(np.max(diff / (tol.atol + tol.rtol * np.abs(w)), initial=0.0))
    log = os.environ.get("AELAB_NOISE_LOG")
    if log:
        row = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "key": key,
            "name": name,
            "max_abs": float(np.max(diff, initial=0.0)),
            "max_rel": float(np.max(diff / np.maximum(np.abs(w), 1e-30), initial=0.0)),
            "share": share,
            "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
        }
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        if os.environ.get("AELAB_NOISE_MEASURE") == "1":
            return share
    assert share <= 1.0, (
        f"{name}: largest deviation {float(np.max(diff)):.3g} is {share:.2f}x the tolerance "
        f"(rtol={tol.rtol:g}, atol={tol.atol:g}; {tol.measured})"
    )
    return share
