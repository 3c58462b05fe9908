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


def shared_path(*parts) -> Path:
    """Path under ../shared/datasets, or skip the test with a clear reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (it sits beside the project on dev machines and CI)")
    return p

# tests/plugins holds a toy encoder package that tests install through sys.path / PYTHONPATH
# themselves; collecting it (e.g. for --doctest-modules) would import it too early.
collect_ignore = ["plugins"]
