"""Notebook display: every result type's ``_repr_html_`` is well-formed HTML built by the renderer."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from whitenclip import GaussianEntropy, GaussianMI, Whitener, gaussianity_report, score
from whitenclip.whitening import summarize

VOID = {"br", "img", "meta", "hr", "input", "link"}


class _Balanced(HTMLParser):
    """Counts tags and checks every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Balanced:
    p = _Balanced()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors[:3]
    assert not p.stack, f"unclosed: {p.stack}"
    return p


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 6))
    Y = X[:, :3] + 0.5 * rng.standard_normal((600, 3))
    return X, Y


def test_tables_render_as_html_with_their_numbers(data):
    X, Y = data
    wh = Whitener().fit(X)
    table = score(wh, X[:5], ids=[f"r{i}" for i in range(5)])
    for result, needle in [
        (table, "r4"),
        (summarize(wh), "6"),
        (GaussianEntropy(ci=None).fit(X).result(), "nats"),
        (GaussianMI(ci=None).fit(X, Y).result(), "nats"),
    ]:
        html = result._repr_html_()
        text = " ".join(parse(html).text)
        assert needle in text, (type(result).__name__, text[:300])
    # the score table shows the row's own loglik as the terminal table does
    assert f"{table['loglik'][0]:.4g}"[:5] in " ".join(parse(table._repr_html_()).text)


def test_report_html_holds_its_figures_inline(data):
    X, _ = data
    report = gaussianity_report(X, trials=2, projections=50)
    p = parse(report._repr_html_())
    imgs = [a for t, a in p.tags if t == "img"]
    assert imgs and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert any("Verdict" in t for t in p.text)


def test_score_table_to_pandas_keeps_ids_and_values(data):
    pd = pytest.importorskip("pandas")
    X, _ = data
    table = score(Whitener().fit(X), X[:7])
    df = table.to_pandas()
    assert isinstance(df, pd.DataFrame) and df.index.name == "id"
    assert list(df.index) == table.row_ids() and tuple(df.columns) == table.columns
    np.testing.assert_array_equal(df["sqnorm"].to_numpy(), table["sqnorm"])


def test_simulation_html_holds_its_curves():
    from whitenclip.simulate import METRICS, RunHistory, SimulationResult, make_config

    cfg = make_config(losses="infonce", steps=2, evals=1, seeds=2)
    runs = []
    for seed in range(2):
        metrics = {k: (0.5, 0.9) for k in METRICS}
        runs.append(RunHistory("infonce", seed, (0, 2), metrics, 1.0, 1.0))
    res = SimulationResult(cfg, tuple(runs), {"ad_pass": 0.95}, 2.0, 2.0)
    p = parse(res._repr_html_())
    assert [a for t, a in p.tags if t == "img" and a["src"].startswith("data:image/png;base64,")]
    assert "infonce" in " ".join(p.text)
