"""Shared fixtures: seeded data and the optional real data beside the project (../shared)."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def anisotropic(rng):
    """(600, 12) float64 rows of N(mu, Sigma) with a known, well-spread covariance."""
    d = 12
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(10.0, 0.05, d)
    mu = rng.normal(0, 2, d)
    X = mu + (rng.standard_normal((600, d)) * np.sqrt(lam)) @ Q.T
    return X


def rel(a, b) -> float:
    """Largest absolute difference of a and b relative to b's largest magnitude."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def same_whitener(a, b, tol=1e-12) -> None:
    """Whiteners a and b agree: count, rank, and mean, covariance and W W^T to ``tol`` relative
    (W itself is defined up to the signs of its eigenvectors)."""
    assert a.n_samples_ == b.n_samples_ and a.rank_ == b.rank_
    assert rel(a.mean_, b.mean_) < tol
    assert rel(a.covariance_, b.covariance_) < tol
    signs = np.sign(np.sum(a.W_ * b.W_, axis=0))
    assert rel(a.W_ * signs, b.W_) < tol
    assert rel(a.W_ @ a.W_.T, b.W_ @ b.W_.T) < tol


def shared_path(*parts) -> Path:
    """Path under ../shared/datasets, or skip the test with a clear reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (it sits beside the project on dev machines and CI)")
    return p


def flickr_captions_by_image() -> dict[str, list[str]]:
    """Flickr8k's all_captions.txt (CSV image,caption) as {image: its captions in file order}, or skip."""
    import csv

    by_image: dict[str, list[str]] = {}
    with open(shared_path("flickr8k", "all_captions.txt"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_image.setdefault(row["image"], []).append(row["caption"])
    return by_image

# tests/plugins holds a toy encoder package that tests install through sys.path / PYTHONPATH
# themselves; collecting it (e.g. for --doctest-modules) would import it too early.
collect_ignore = ["plugins"]
