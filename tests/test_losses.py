"""Loss functions against hand-computed values and independent numpy formulas."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from whitenclip import losses as L  # noqa: E402


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def np_ntxent(u, v, tau):
    """NT-Xent written out: 2N anchors, cosine / tau, positive at a + N mod 2N, self excluded."""
    h = np.vstack([u, v])
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    n2 = len(h)
    total = 0.0
    for a in range(n2):
        s = h @ h[a] / tau
        pos = (a + n2 // 2) % n2
        others = [b for b in range(n2) if b != a]
        total += -s[pos] + math.log(sum(math.exp(s[b]) for b in others))
    return total / n2


def test_info_nce_hand_values():
    u = t([[1.0, 0.0], [0.0, 1.0]])
    # anchor e1: other rows e2 (cos 0), e1 (positive, cos 1), e2 (cos 0): -1 + log(e + 2)
    assert float(L.info_nce(u, u, tau=1.0)) == pytest.approx(math.log(math.e + 2) - 1, abs=1e-12)
    # positives at cosine -1: 1 + log(2 + 1/e)
    assert float(L.info_nce(u, -u, tau=1.0)) == pytest.approx(1 + math.log(2 + math.exp(-1)), abs=1e-12)
    # temperature halves every similarity's denominator: tau = 0.5 doubles the logits
    assert float(L.info_nce(u, u, tau=0.5)) == pytest.approx(math.log(math.exp(2) + 2) - 2, abs=1e-12)


def test_info_nce_matches_written_out_formula():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    assert float(L.info_nce(t(u), t(v), tau=0.3)) == pytest.approx(np_ntxent(u, v, 0.3), rel=1e-12)
    # scale invariance: cosines do not change
    assert float(L.info_nce(t(3 * u), t(0.5 * v), tau=0.3)) == pytest.approx(np_ntxent(u, v, 0.3), rel=1e-12)


def test_an_info_nce_hand_value_and_formula():
    raw = t([math.log(math.e - 1)])  # softplus -> Lambda = 1
    u = t([[0.0], [1.0]])
    # s = [[0, -1/2], [-1/2, 0]]: each anchor pays log(1 + e^{-1/2})
    assert float(L.an_info_nce(u, u, raw)) == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-12)
    rng = np.random.default_rng(1)
    uu, vv, r = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    lam = np.log1p(np.exp(r))
    s = np.array([[-0.5 * np.sum(lam * (uu[i] - vv[j]) ** 2) for j in range(5)] for i in range(5)])
    ref = np.mean([-s[i, i] + np.log(np.exp(s[i]).sum()) for i in range(5)])
    assert float(L.an_info_nce(t(uu), t(vv), t(r))) == pytest.approx(ref, rel=1e-10)


def test_icon_augmentation_gaussian_equals_info_nce():
    rng = np.random.default_rng(2)
    u, v = t(rng.standard_normal((7, 5))), t(rng.standard_normal((7, 5)))
    p = L.augmentation_graph(7, dtype=torch.float64)
    assert float(L.icon(u, v, p, "gaussian", tau=0.2)) == pytest.approx(float(L.info_nce(u, v, 0.2)), rel=1e-12)


def test_icon_label_graph_and_student_t_by_hand():
    # 1-D points h = [0, 1, 3, 6] (u = [0, 1], v = [3, 6]); labels [0, 0] -> p uniform over the 3 others
    u, v = t([[0.0], [1.0]]), t([[3.0], [6.0]])
    p = L.label_graph(torch.tensor([0, 0]), dtype=torch.float64)
    assert np.allclose(p.numpy(), (1 - np.eye(4)) / 3)
    h = np.array([0.0, 1.0, 3.0, 6.0])
    kl = 0.0
    for a in range(4):
        w = np.array([1 / (1 + (h[a] - h[b]) ** 2) if b != a else 0.0 for b in range(4)])
        q = w / w.sum()
        kl += sum((1 / 3) * math.log((1 / 3) / q[b]) for b in range(4) if b != a)
    assert float(L.icon(u, v, p, "student-t")) == pytest.approx(kl / 4, rel=1e-10)
    # augmentation graph + Student-t: cross-entropy of the other view under the t kernel
    pa = L.augmentation_graph(2, dtype=torch.float64)
    ce = 0.0
    for a in range(4):
        w = np.array([1 / (1 + (h[a] - h[b]) ** 2) if b != a else 0.0 for b in range(4)])
        ce += -math.log(w[(a + 2) % 4] / w.sum())
    assert float(L.icon(u, v, pa, "student-t")) == pytest.approx(ce / 4, rel=1e-10)


def test_label_graph_rows_are_distributions():
    p = L.label_graph(torch.tensor([0, 1, 0, 2]))
    assert torch.allclose(p.sum(1), torch.ones(8))
    assert float(p.diagonal().abs().sum()) == 0.0
    # row 0 (label 0): its other view (row 4) and rows 2, 6 share the label
    assert torch.allclose(p[0], torch.tensor([0, 0, 1 / 3, 0, 1 / 3, 0, 1 / 3, 0]))


def test_supervised_ce_hand_value():
    logits = t([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])
    # row 0: log 4; row 1 (label 0): -log 3 + log 6 = log 2
    assert float(L.supervised_ce(logits, torch.tensor([2, 0]))) == pytest.approx((math.log(4) + math.log(2)) / 2)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        L.info_nce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError):
        L.an_info_nce(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError):
        L.icon(torch.zeros(2, 2), torch.zeros(2, 2), L.augmentation_graph(2), "cauchy")
