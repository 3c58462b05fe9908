"""The manual runs: every example in README.md and docs/*.md, and every CLI option is documented.

Examples are collected with Sybil (``sybil`` package) and run in page order, each page in its
own copy of a work folder that holds the files the examples name (small embeddings, a whitener,
a store, captions taken from data/):

- ```` ```python ```` blocks run in one namespace per page, in the page's work folder;
- ```` ```sh ```` / ```` ```bash ```` blocks: each ``whitenclip ...`` line (continued with ``\\``,
  ``#`` comments dropped, unquoted globs expanded in the work folder, ``cat FILE | whitenclip ...``
  fed FILE on stdin) runs in process with typer's CliRunner and must exit 0; other lines
  (``make``, ``pip``, ``#SBATCH``) are shown, not run, except ``mkdir -p``;
- ``<!-- skip: next "reason" -->`` before a block skips it, with the reason shown by pytest
  (weights that cannot be downloaded here, a GPU, a Dask cluster, minutes of training).
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import unittest
from pathlib import Path

import numpy as np
import pytest
import typer
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
from typer.testing import CliRunner

from whitenclip.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
GENERATED = {"reference.md"}  # `--help` of every command, generated: not counted as documenting an option

runner = CliRunner()
EXAMPLE_ENV = {"SLURM_ARRAY_TASK_ID": "0"}


# --------------------------------------------------------------------------- shell blocks


def _logical_lines(source: str):
    """Lines of a shell block with ``\\`` continuations joined."""
    buf = ""
    for line in source.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield buf + line
        buf = ""
    if buf:
        yield buf


def _expand(raw: str, workdir: Path) -> list[str]:
    """One raw shell word -> its arguments: quotes removed, unquoted globs expanded (bash: kept when no match)."""
    word = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: EXAMPLE_ENV[m.group(1) or m.group(2)], raw)
    quoted = word[:1] in "'\""
    value = shlex.split(word)[0] if word else ""
    if not quoted and any(c in value for c in "*?["):
        matches = sorted(str(p.relative_to(workdir)) for p in workdir.glob(value))
        return matches or [value]
    return [value]


def shell_commands(source: str, workdir: Path):
    """(args, stdin text or None) for each ``whitenclip`` command of a shell block."""
    for line in _logical_lines(source):
        lex = shlex.shlex(line, posix=False, punctuation_chars="|")
        lex.whitespace_split, lex.commenters = True, "#"
        words = list(lex)
        if not words:
            continue
        stdin = None
        if words[0] == "cat" and "|" in words:
            bar = words.index("|")
            stdin = "".join((workdir / a).read_text() for w in words[1:bar] for a in _expand(w, workdir))
            words = words[bar + 1:]
        if words[:2] == ["mkdir", "-p"]:
            for w in words[2:]:
                for d in _expand(w, workdir):
                    (workdir / d).mkdir(parents=True, exist_ok=True)
            continue
        if words[0] != "whitenclip":
            continue  # make, pip, #SBATCH...: shown, not run
        assert "|" not in words and ">" not in words, f"unsupported shell syntax in an example: {line}"
        yield [a for w in words[1:] for a in _expand(w, workdir)], stdin


class ShellBlockParser(CodeBlockParser):
    """Runs the ``whitenclip`` lines of ```` ```sh ```` / ```` ```bash ```` blocks in the page's work folder."""

    def evaluate(self, example) -> None:
        workdir = example.namespace["workdir"]
        for args, stdin in shell_commands(example.parsed, workdir):
            res = runner.invoke(app, args, input=stdin)
            if res.exit_code != 0:
                raise AssertionError(f"`whitenclip {shlex.join(args)}` exited {res.exit_code}:\n{res.output}"
                                     + (f"\n{res.exception!r}" if res.exception and res.exit_code != 2 else ""))


SYBIL = Sybil(parsers=[PythonCodeBlockParser(), ShellBlockParser("sh"), ShellBlockParser("bash"), SkipParser()])


# --------------------------------------------------------------------------- the work folder


def _write_store(path: Path, X: np.ndarray, ids: list[str]) -> None:
    from whitenclip.writers import StoreWriter

    writer = StoreWriter(path, dim=X.shape[1], meta={"n_items": len(ids)})
    writer.write_shard(ids, X.astype(np.float32), items_end=len(ids))


def _write_tables(root: Path, rows, captions: list[str]) -> None:
    """Parquet and Arrow examples: a folder of parquet parts, a save_to_disk folder, two columns of one
    table, captions in a parquet file."""
    import json

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def emb_table(X, **columns):
        return pa.table({**columns, "clip_emb": pa.array(list(X), type=pa.list_(pa.float32()))})

    (root / "laion_parts").mkdir()
    for k in range(2):
        pq.write_table(emb_table(rows(150), key=[f"k{k}_{i}" for i in range(150)]),
                       root / "laion_parts" / f"part-{k}.parquet")
    ds = root / "my_dataset"  # what datasets.save_to_disk writes: IPC streams listed in state.json
    ds.mkdir()
    table = emb_table(rows(100))
    with pa.ipc.new_stream(ds / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table)
    (ds / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                               "_fingerprint": "docs"}))
    X = rows(300)
    Y = X[:, ::-1] + rows(300)
    pq.write_table(pa.table({"image_emb": pa.array(list(X), type=pa.list_(pa.float32())),
                             "text_emb": pa.array(list(Y), type=pa.list_(pa.float32()))}), root / "emb.parquet")
    pq.write_table(pa.table({"image": [f"img{i // 5}.jpg" for i in range(30)], "caption": captions[:30]}),
                   root / "flickr.parquet")


def build_workdir(root: Path) -> Path:
    """Small versions of every file the examples name (the names, not the sizes, of the manual's files)."""
    rng = np.random.default_rng(7)
    d = 16
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.sqrt(np.geomspace(4.0, 0.05, d))

    def rows(n):
        return ((rng.standard_normal((n, d)) * scales) @ Q.T + 1.0).astype(np.float32)

    ref = rows(400)
    np.save(root / "ref.npy", ref)
    np.save(root / "queries.npy", rows(20))
    np.save(root / "emb.npy", rows(200))
    (root / "ids.txt").write_text("".join(f"g{i // 5}\n" for i in range(len(ref))))
    (root / "ids300.txt").write_text("".join(f"g{i // 3}\n" for i in range(300)))
    (root / "img_emb").mkdir()  # a clip-retrieval folder of one shard: one piece, so --engine dask runs in the driver
    np.save(root / "img_emb" / "img_emb_0.npy", rows(300))
    shutil.copytree(REPO / "data" / "images", root / "images")
    (root / "vectors.txt").write_text("".join(" ".join(f"{v:.5f}" for v in r) + "\n" for r in rows(3)))
    # paired rows for mi: Y shares 4 directions with X
    X = rows(300)
    Y = np.concatenate([X[:, :4] + 0.5 * rng.standard_normal((300, 4)), rng.standard_normal((300, 8))], axis=1)
    np.save(root / "images.npy", X)
    np.save(root / "captions.npy", Y.astype(np.float32))
    np.save(root / "first.npy", X)
    np.save(root / "second.npy", Y.astype(np.float32))
    for name in ("store", "embeddings"):
        _write_store(root / name, rows(300), [f"item{i}" for i in range(300)])
    # captions: the project's own demo captions, few enough for MiniLM to embed in seconds
    data = root / "data"
    data.mkdir()
    lines = (REPO / "data" / "captions.txt").read_text().splitlines()
    (data / "captions.txt").write_text("\n".join(lines[:60]) + "\n")
    for name, n in (("captions_heldout.txt", 10), ("captions_odd.txt", 5)):
        (data / name).write_text("\n".join((REPO / "data" / name).read_text().splitlines()[:n]) + "\n")
    shutil.copy(data / "captions.txt", root / "captions.txt")
    with open(root / "captions.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["image", "caption"])
        out.writerows([f"img{i // 5}.jpg", c] for i, c in enumerate(lines[:60]))
    _write_tables(root, rows, lines)
    # the W-CLIP paper's released files are a mean vector and a whitening matrix saved with torch.save
    import torch

    cov = np.cov(ref, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    torch.save(torch.tensor(ref.mean(0)), root / "mean_image_L14.pt")
    torch.save(torch.tensor(evecs / np.sqrt(evals)), root / "w_mat_image_L14.pt")
    res = runner.invoke(app, ["fit", "ref.npy", "-o", "W.safetensors", "-q"])  # cwd is root (see template)
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return build_workdir(root)


_documents: dict[Path, object] = {}
_workdirs: dict[Path, Path] = {}


def _examples():
    for page in PAGES:
        if not page.exists():
            continue
        document = SYBIL.parse(page)
        _documents[page] = document
        for example in document.examples():
            yield pytest.param(page, example, id=f"{page.relative_to(REPO)}:{example.line}")


@pytest.mark.parametrize(("page", "example"), list(_examples()))
def test_example(page, example, template, tmp_path_factory, monkeypatch):
    """Each example of a page runs (in page order, in the page's own copy of the work folder)."""
    if page not in _workdirs:
        _workdirs[page] = Path(shutil.copytree(template, tmp_path_factory.mktemp(page.stem) / "work"))
    workdir = _workdirs[page]
    monkeypatch.chdir(workdir)
    example.namespace["workdir"] = workdir
    try:
        example.evaluate()
    except unittest.SkipTest as exc:  # a `<!-- skip: next "reason" -->`: reported with the page and line
        pytest.skip(f"{page.name}:{example.line}: {exc}")


# --------------------------------------------------------------------------- the CLI is documented


def cli_options() -> dict[str, list[str]]:
    """{command: its long options (both spellings of a --x/--no-x flag)}, hidden options left out."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    found = {"": [o for p in root.params for o in p.opts + p.secondary_opts if o.startswith("--")]}
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        found[name] = [o for p in cmd.params if not getattr(p, "hidden", False)
                       for o in p.opts + p.secondary_opts if o.startswith("--")]
    return found


def _pages_text() -> dict[str, str]:
    return {p.name: p.read_text() for p in PAGES if p.exists() and p.name not in GENERATED}


def undocumented_options(pages: dict[str, str] | None = None) -> list[str]:
    """``command --option`` for each option not named on a page that shows that command.

    A page shows a command when it contains ``whitenclip COMMAND``; an option counts as documented
    when ``--option`` appears as a whole word on one of those pages (the generated reference page of
    ``--help`` texts does not count). Global options (``--debug``...) must appear on some page.
    """
    pages = _pages_text() if pages is None else pages
    missing = []
    for command, options in cli_options().items():
        shown = [t for t in pages.values() if not command or re.search(rf"whitenclip {re.escape(command)}(?![\w-])", t)]
        if not shown:
            missing.append(f"{command} (no page shows `whitenclip {command}`)")
            continue
        for opt in options:
            word = re.compile(rf"(?<![\w-]){re.escape(opt)}(?![\w-])")
            if not any(word.search(t) for t in shown):
                missing.append(f"{command or 'whitenclip'} {opt}")
    return missing


def test_every_cli_option_is_documented():
    missing = undocumented_options()
    assert not missing, "options not named in the docs (docs/*.md, README.md): " + ", ".join(missing)


def test_option_check_reports_what_is_missing():
    """The check itself: an option named only on a page of another command, or nowhere, is reported."""
    pages = {"a.md": "whitenclip info W.safetensors --json --quiet", "b.md": "whitenclip fit --method zca --debug"}
    missing = undocumented_options(pages)
    assert "info --json" not in missing and "fit --method" not in missing and "whitenclip --debug" not in missing
    assert "fit --json" not in missing  # fit has no --json
    assert {"fit --quiet", "fit --shrinkage", "whitenclip --version", "fit --no-calibration"} <= set(missing)
    assert "score (no page shows `whitenclip score`)" in missing


def test_shell_lines_are_split_as_bash_would(tmp_path):
    (tmp_path / "a_2.npy").write_text("")
    (tmp_path / "a_10.npy").write_text("")
    (tmp_path / "v.txt").write_text("1 2\n")
    block = ("make demo   # not run\n"
             "whitenclip fit 'a_*.npy' a_*.npy -o W.safetensors \\\n    --shrinkage oas  # comment\n"
             "cat v.txt | whitenclip score - -w W.safetensors\n"
             "whitenclip moments x_${SLURM_ARRAY_TASK_ID}.npy\n")
    got = list(shell_commands(block, tmp_path))
    assert got == [(["fit", "a_*.npy", "a_10.npy", "a_2.npy", "-o", "W.safetensors", "--shrinkage", "oas"], None),
                   (["score", "-", "-w", "W.safetensors"], "1 2\n"),
                   (["moments", "x_0.npy"], None)]


def test_mkdocs_nav_lists_every_page():
    """Every docs/*.md is in mkdocs.yml's nav (mkdocs --strict fails on links, not on orphan pages)."""
    nav = (REPO / "mkdocs.yml").read_text()
    assert [p.name for p in sorted(DOCS.glob("*.md")) if p.name not in nav] == []


def _anchors(page: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slugify(h.replace("`", ""), "-") for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_readme_links_into_the_manual_resolve():
    """README links (not built by mkdocs) point at existing pages and headings."""
    links = re.findall(r"\]\(([^)#\s]+\.md)(?:#([\w-]+))?\)", (REPO / "README.md").read_text())
    assert len(links) >= 10
    for target, anchor in links:
        page = REPO / target
        assert page.exists(), target
        assert not anchor or anchor in _anchors(page), f"{target}#{anchor}"


def test_readme_is_a_front_page():
    """The README stays short and keeps the two set-up commands of a fresh machine."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    setup = re.search(r"## Quick start \(fresh machine\)\n\n```sh\n(.*?)```", text, re.S).group(1)
    assert [line.split()[:2] for line in setup.splitlines()] == [["make", "demo"], ["make", "test"]]


def test_command_reference_is_up_to_date():
    """docs/reference.md holds every command's current `--help` (regenerate: cog -r docs/reference.md)."""
    Cog = pytest.importorskip("cogapp").Cog
    assert Cog().main(["cog", "--check", str(DOCS / "reference.md")]) == 0, "run: .venv/bin/cog -r docs/reference.md"
