"""The one-way layering of README (inputs -> encoders -> readers -> whitening -> analyses -> render -> cli),
as the import-linter contracts of ``.importlinter`` state it, and the moves that made it hold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    """``lint-imports`` (``make lint``): every contract kept, lazy imports inside functions included."""
    cli = pytest.importorskip("importlinter.cli")
    config = ROOT / ".importlinter"
    if not config.is_file():  # an installed package without the repository's files
        pytest.skip("no .importlinter beside the package")
    code = cli.lint_imports(config_filename=str(config), no_cache=True, no_logo=True)
    assert code == 0, "lint-imports found an import against the layering (run it for the chain)"


def test_inputs_reads_no_table_module(tmp_path):
    """readers.items sits below readers.table: classifying paths (a parquet file, a folder of tables)
    does not load whitenclip.readers.table; the names stay importable from table (re-exported there),
    and items are collected by readers.collect."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.parquet").write_bytes(b"")
    code = f"""
import json, sys
from whitenclip.readers.items import detect_modality, is_table_path
out = [detect_modality([{str(tmp_path / 'c.parquet')!r}]), is_table_path({str(tmp_path / 't')!r}),
       is_table_path({str(tmp_path / 'x.jpg')!r}), 'whitenclip.readers.table' in sys.modules]
import whitenclip.readers.items as i, whitenclip.sources as s, whitenclip.readers.table as t
out += [t.is_table_path is i.is_table_path, t.TABLE_SUFFIXES == ('.parquet', '.arrow', '.feather', '.ipc'),
        s.collect_inputs.__module__]
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == ["text", True, False, False, True, True, "whitenclip.readers.collect"]


def test_encoder_encode_runs_the_embedding_loop():
    """encoders.base no longer imports encoders.embedding: Encoder.encode runs the loop that module installs."""
    from whitenclip.encoders import base, embedding

    assert base._EMBEDDING_LOOP[0] is embedding.embed_items
