"""Write the seeded synthetic embeddings used by tests and the fallback demo.

``demo_reference.npy``  (2000, 64) float32 reference rows: a Gaussian with an anisotropic
                        spectrum (eigenvalues decaying as 1/k) and a non-zero mean, the shape of
                        a contrastive embedding cloud in miniature;
``demo_queries.npy``    (8, 64) float32: 4 in-distribution rows and 4 outliers at growing distance.

Run: python data/make_demo_embeddings.py  (deterministic: seed 0)
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make(seed: int = 0, n: int = 2000, d: int = 64):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = 1.0 / np.sqrt(np.arange(1, d + 1))
    mean = rng.normal(0.0, 0.5, d)
    reference = mean + (rng.standard_normal((n, d)) * scales) @ Q.T
    inliers = mean + (rng.standard_normal((4, d)) * scales) @ Q.T
    outliers = mean + (rng.standard_normal((4, d)) * scales * np.array([[2.0], [3.0], [5.0], [8.0]])) @ Q.T
    return reference.astype(np.float32), np.vstack([inliers, outliers]).astype(np.float32)


if __name__ == "__main__":
    ref, queries = make()
    np.save(HERE / "demo_reference.npy", ref)
    np.save(HERE / "demo_queries.npy", queries)
    print(f"wrote {HERE / 'demo_reference.npy'} {ref.shape} and {HERE / 'demo_queries.npy'} {queries.shape}")
