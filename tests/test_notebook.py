"""Notebook display: every result type's ``_repr_html_`` is well-formed HTML built by the renderer."""

from __future__ import annotations

import re
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


def test_report_html_holds_its_figures_inline(fragments):
    p = parse(fragments["GaussianityReport"])
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) >= 3 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert any("Verdict" in t for t in p.text)


def test_score_table_to_pandas_keeps_ids_and_values(data):
    pd = pytest.importorskip("pandas")
    X, _ = data
    table = score(Whitener().fit(X), X[:7])
    df = table.to_pandas()
    assert isinstance(df, pd.DataFrame) and df.index.name == "id"
    assert list(df.index) == table.row_ids() and tuple(df.columns) == table.columns
    np.testing.assert_array_equal(df["sqnorm"].to_numpy(), table["sqnorm"])


def test_simulation_html_holds_its_curves(fragments):
    p = parse(fragments["SimulationResult"])
    assert [a for t, a in p.tags if t == "img" and a["src"].startswith("data:image/png;base64,")]
    assert "infonce" in " ".join(p.text)


# ---------------------------------------------------------------------------------------
# every result type: an HTML fragment (never a page), real tables, cut when long, bounded repr
# ---------------------------------------------------------------------------------------
def _all_result_types() -> set[type]:
    """Every Result subclass the package defines (modules imported first)."""
    import importlib
    import pkgutil

    import whitenclip
    from whitenclip.results import Result

    for mod in pkgutil.walk_packages(whitenclip.__path__, "whitenclip."):
        if not mod.name.startswith(("whitenclip.encoders", "whitenclip.cli")):
            importlib.import_module(mod.name)
    seen, todo = set(), [Result]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen and sub.__module__.startswith("whitenclip.") and sub.__module__ != "whitenclip.results":
                seen.add(sub)
                todo.append(sub)
    return {t for t in seen if not any(issubclass(o, t) for o in seen - {t})}  # abstract bases (Section) left out


def simulation_result():
    from whitenclip.simulate import METRICS, RunHistory, SimulationResult, make_config

    cfg = make_config(losses="infonce", steps=2, evals=1, seeds=2)
    runs = tuple(RunHistory("infonce", seed, (0, 2), {k: (0.5, 0.9) for k in METRICS}, 1.0, 1.0) for seed in range(2))
    return SimulationResult(cfg, runs, {"ad_pass": 0.95}, 2.0, 2.0)


def paper_comparison(sim):
    from whitenclip.simulate import PRESET_COLUMNS, PRESET_ROWS, PUBLISHED_ICLR2026, PaperComparison

    stat = {"mean": 0.9, "sd": 0.01, "values": [0.89, 0.91]}
    measured = {k: {m: stat for m, *_ in PRESET_ROWS} for k, *_ in PRESET_COLUMNS}
    ref = {k: 0.95 for k in ("norm_cv", "z_norm_cv", "ad_mean", "ad_pass", "ad_pass_feature", "dp_mean", "dp_pass",
                             "dp_pass_feature", "f_ad_pass")}
    return PaperComparison("iclr2026", PRESET_COLUMNS, PRESET_ROWS, PUBLISHED_ICLR2026, measured,
                           {"synthetic": ref, "digits": ref}, {"check <a>": True}, ("choice",), (sim,), 1.0, 1.0,
                           (0.5, 0.4))


def all_results(X, Y) -> list:
    """One instance of every result type, from small synthetic data (also used for the browser check)."""
    import whitenclip
    from whitenclip.moments import MomentsSummary
    from whitenclip.readers.summary import EmbeddingsSummary
    from whitenclip.whitening import grouping_check

    wh = Whitener().fit(X)
    ids = [f"r{i}" for i in range(len(X) - 1)] + ["<script>alert('[/]')</script>"]
    table = score(wh, X, ids=ids)
    ent = GaussianEntropy().fit(X).result()
    est = GaussianMI().fit(X, Y)
    mi = est.result()
    pmi = est.pointwise_result(X, Y, ids)
    report = gaussianity_report(X, trials=2, projections=50)
    sim = simulation_result()
    cmp = whitenclip.compare(X[:300], X[300:] + 0.5, n_permutations=99, verdict=False)
    summary = summarize(wh, "runs/W[v2] <b>.safetensors")
    emb = EmbeddingsSummary(path="runs/[/]emb <i>.npy", kind="npy", n_rows=len(X), dim=X.shape[1], dtype="float64",
                            shards=1, ids="row index", encoder={"encoder": "minilm [bold]"})
    mom = MomentsSummary(path="parts/[/]m.npz", n=len(X), d=X.shape[1], pieces=2, encoder={"encoder": ":smile:"},
                         gram="float64", power_sums=True, calibration_mode="rows", calibration_rows=100,
                         dropped_nonfinite=0, input_hash="abc")
    return [table, summary, summary.spectrum, emb, mom, ent, ent.knn, mi, mi.ksg, mi.crossfit, pmi, report,
            report.whitener, report.protocol, *report.sections, sim, sim.config, sim.runs[0], paper_comparison(sim),
            cmp, cmp.ref, cmp.queries[0], grouping_check(X)]


@pytest.fixture(scope="module")
def results(data):
    X, Y = data
    return all_results(X, Y)


@pytest.fixture(scope="module")
def fragments(results) -> dict[str, str]:
    """Each result's ``_repr_html_()``, by type name (figures are drawn once)."""
    return {type(r).__name__: r._repr_html_() for r in results}


def assert_fragment(html: str) -> _Balanced:
    """A notebook fragment: no page, CSS scoped under the wrapping div's class, a real <table>."""
    low = html.lower()
    assert "<html" not in low and "<body" not in low and "doctype" not in low and "<head" not in low
    p = parse(html)
    assert p.tags[0] == ("div", {"class": "whitenclip"}) and html.endswith("</div>")
    assert any(t == "table" for t, _ in p.tags)
    assert "<pre" not in low and "┃" not in html and "│" not in html  # no box-drawing text
    for css in re.findall(r"<style>(.*?)</style>", html, re.S):
        for selectors in re.findall(r"([^{}]+)\{[^{}]*\}", css):
            for sel in selectors.split(","):
                assert sel.strip().startswith(".whitenclip"), f"unscoped CSS selector {sel!r}"
    return p


def test_every_result_type_is_covered(results):
    """A new result type needs an instance in ``all_results`` (so the checks below cover it)."""
    missing = _all_result_types() - {type(r) for r in results}
    assert not missing, f"add an instance of {sorted(t.__qualname__ for t in missing)} to all_results"


def test_every_result_renders_an_html_fragment(fragments):
    for name, html in fragments.items():
        p = assert_fragment(html)
        assert any(t.strip() for t in p.text), name


def test_fragments_escape_user_text(fragments):
    frag = fragments["ScoreTable"]
    assert "<script>" not in frag and "&lt;script&gt;alert(&#x27;[/]&#x27;)&lt;/script&gt;" in frag
    frag = fragments["WhitenerSummary"]
    assert "<b>" not in frag and "whitener runs/W[v2] &lt;b&gt;.safetensors" in frag
    assert "runs/[/]emb &lt;i&gt;.npy" in fragments["EmbeddingsSummary"]
    assert "check &lt;a&gt; yes" in fragments["PaperComparison"]


def _data_rows(html: str) -> list[list[str]]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if row]


def test_long_tables_are_cut_with_a_count(results):
    table, pmi = results[0], results[10]
    assert table.n_rows == 600 and len(pmi.ids) == 600
    for result, ncols in ((table, 1 + len(table.columns)), (pmi, 2)):
        html = result._repr_html_()
        rows = _data_rows(html)
        ids = [r[0] for r in rows]
        assert ids[:5] == ["r0", "r1", "r2", "r3", "r4"] and ids[5] == "…" and len(rows) == 11
        assert ids[6:10] == ["r595", "r596", "r597", "r598"] and ids[10].startswith("&lt;script&gt;")
        assert rows[5] == ["…"] * ncols
        assert f"600 rows × {ncols} columns" in html
        assert len(html) < 6000
    first = _data_rows(table._repr_html_())[0]
    assert first[1] == f"{table['loglik'][0]:.6g}" and first[3] == f"{table['sqnorm'][0]:.6g}"


def test_short_tables_are_not_cut(data):
    X, _ = data
    table = score(Whitener().fit(X), X[:60])
    html = table._repr_html_()
    assert [r[0] for r in _data_rows(html)] == [str(i) for i in range(60)] and "rows ×" not in html


def test_repr_of_row_results_is_bounded(data):
    X, Y = data
    big = np.random.default_rng(3).standard_normal((10_000, 6))
    table = score(Whitener().fit(X), big)
    text = repr(table)
    lines = text.splitlines()
    assert len(text) < 1500 and len(lines) == 10, text
    assert lines[0] == "ScoreTable: 10000 row(s)" and lines[-1] == "[10000 rows x 6 columns]"
    assert lines[2].split()[:2] == ["0", f"{table['loglik'][0]:.6g}"] and lines[-2].split()[0] == "9999"
    pmi = GaussianMI(ci=None).fit(X, Y).pointwise_result(X, Y, [f"pair{i}" for i in range(len(X))])
    text = repr(pmi)
    assert len(text) < 800 and "[600 rows x 2 columns]" in text and "pair599" in text
    from whitenclip.likelihood import ScoreTable

    assert repr(ScoreTable.concat([], calibrated=True)).splitlines()[-1] == "[0 rows x 6 columns]"


def test_report_fragment_is_not_a_page_but_the_saved_page_is(results, fragments):
    from whitenclip.render.gaussianity import html_page

    p = assert_fragment(fragments["GaussianityReport"])
    assert not any(t in ("h1", "h2") for t, _ in p.tags)  # headings sized for a notebook cell
    report = next(r for r in results if type(r).__name__ == "GaussianityReport")
    page = html_page(report, {})  # what `gaussianity-report -o report/` writes (figures aside)
    assert page.startswith("<!DOCTYPE html>") and "<body>" in page and "body{" in page


def test_repr_html_never_raises_on_degenerate_results(data):
    """Empty tables, a report rebuilt from JSON with nulls, non-finite values: still a fragment."""
    from whitenclip.diagnostics import GaussianityReport
    from whitenclip.likelihood import ScoreTable

    X, _ = data
    wh = Whitener().fit(X)
    assert_fragment(ScoreTable.concat([], calibrated=False)._repr_html_())
    report = gaussianity_report(X, trials=2, projections=50)
    rebuilt = GaussianityReport.from_dict(report.to_dict())
    assert_fragment(rebuilt._repr_html_())
    table = score(wh, X[:3])
    odd = type(table)(**{**{k: getattr(table, k) for k in ("loglik", "logpdf", "sqnorm", "pvalue_chi2")},
                         "pvalue": np.array([np.nan, np.inf, -np.inf]), "ids": ["a", "", "\x00"]})
    html = assert_fragment(odd._repr_html_())
    assert ["nan", "inf", "-inf"] == [r[4] for r in _data_rows(odd._repr_html_())] and html
