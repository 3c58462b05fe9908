"""Train small encoders with InfoNCE-family losses on generated data and watch Gaussianity appear.

*InfoNCE induces a Gaussian distribution* (ICLR 2026) shows that contrastive training drives
features towards a Gaussian while supervised training does not. :func:`simulate` reproduces the
experiment offline: it generates data, trains one encoder per (loss, seed) and, at a schedule of
steps (step 0 included), measures the paper's metrics with whitenclip's own diagnostics
(:func:`whitenclip.diagnostics.coordinate_tests`, :func:`~whitenclip.diagnostics.chi_cv`,
:class:`whitenclip.whitening.Whitener`).

Data (seeded; one task per seed):

* synthetic latents ``z`` in R^k: ``gmm`` (10 components, means N(0, I), unit covariance; label =
  component), ``laplace`` (iid Laplace(0, 1)) or ``binary`` (iid Bernoulli(0.1)); for the last
  two the label is ``argmax(z[:, :10])``. ``labels="random"`` replaces labels by uniform draws
  independent of z (unlearnable labels). Observations ``x = g(z)`` through a random invertible
  leaky-ReLU MLP (3 square layers, unit-norm columns, each layer re-drawn until its condition
  number is below the 25th percentile of 100 draws, as in the cl-ica / AnInfoNCE experiments);
  positives ``z' = z + N(0, diag(1/lambda))``, ``lambda = linspace(5, 25, k)``.
* ``digits``: scikit-learn's 8x8 digits (1797 images); two views by random shift (<= 1 px),
  rotation (<= 10 degrees) and Gaussian pixel noise (sd 0.1); label = digit. One third of the
  images (599) is held out.

Metrics (on the L2-normalised embedding ``e = f(x)/||f(x)||`` of held-out rows; ``w`` its
whitened coordinates under a PCA whitener fitted on those rows):

* ``norm_mean``, ``norm_cv``: mean and CV of ``||f(x)||`` (raw encoder output); ``w_norm_cv``: CV of ``||w||``, against
  ``chi_cv(rank)`` for an exact Gaussian;
* ``ad_mean, ad_pass, dp_mean, dp_pass`` (raw coordinates of e) and ``w_*`` (whitened): the
  per-coordinate protocol of :func:`~whitenclip.diagnostics.coordinate_tests` (10 subsets of 500
  rows, AD pass at A2 < 0.752, DP pass at p > 0.05);
* ``r2`` (synthetic only): held-out R^2 of the least-squares affine map e -> z fitted on 5000
  other rows (mean over the k latent coordinates); ``probe_acc``: held-out accuracy of a
  least-squares (ridge 1e-3) linear classifier e -> one-hot label fitted on the same rows.

Modules, one concern each (each imports only those listed before it): ``config`` (names, limits,
:class:`SimulationConfig`, :func:`make_config`), ``results`` (:class:`RunHistory`,
:class:`SimulationResult`), ``data`` (tasks and views), ``metrics``, ``training`` (one run),
``runner`` (:func:`simulate`) and ``preset`` (``--preset iclr2026``, :class:`PaperComparison`).
"""

from __future__ import annotations

from whitenclip.simulate.config import (
    DATASETS,
    DIGITS_HELDOUT,
    DIGITS_TRAIN,
    ENCODERS,
    EXTRA_LOSSES,
    GMM_COMPONENTS,
    LABELS,
    LOSSES,
    MAX_BATCH_BYTES,
    MAX_SEEDS,
    METRICS,
    MIXINGS,
    N_CLASSES,
    PRESETS,
    SUBSET,
    TRIALS,
    SimulationConfig,
    make_config,
    parse_eval_epochs,
    parse_losses,
)
from whitenclip.simulate.data import DigitsTask, SyntheticTask, augment, invertible_mlp
from whitenclip.simulate.metrics import (
    embedding_metrics,
    feature_pass_rates,
    feature_pass_reference,
    gaussian_reference,
    standardised_norm_cv,
)
from whitenclip.simulate.preset import (
    PRESET_CHOICES,
    PRESET_COLUMNS,
    PRESET_DIGITS,
    PRESET_ROWS,
    PRESET_SYNTHETIC,
    PUBLISHED_ICLR2026,
    PaperComparison,
    compare,
    preset_configs,
    run_preset,
)
from whitenclip.simulate.results import RunHistory, SimulationResult
from whitenclip.simulate.runner import check_store_dirs, simulate
from whitenclip.simulate.training import make_encoder

__all__ = [
    "DATASETS", "DIGITS_HELDOUT", "DIGITS_TRAIN", "ENCODERS", "EXTRA_LOSSES", "GMM_COMPONENTS", "LABELS", "LOSSES",
    "MAX_BATCH_BYTES", "MAX_SEEDS", "METRICS", "MIXINGS", "N_CLASSES", "PRESETS", "PRESET_CHOICES", "PRESET_COLUMNS",
    "PRESET_DIGITS", "PRESET_ROWS", "PRESET_SYNTHETIC", "PUBLISHED_ICLR2026", "SUBSET", "TRIALS", "DigitsTask",
    "PaperComparison", "RunHistory", "SimulationConfig", "SimulationResult", "SyntheticTask", "augment",
    "check_store_dirs", "compare", "embedding_metrics", "feature_pass_rates", "feature_pass_reference",
    "gaussian_reference", "invertible_mlp", "make_config", "make_encoder", "parse_eval_epochs", "parse_losses",
    "preset_configs", "run_preset", "simulate", "standardised_norm_cv",
]
