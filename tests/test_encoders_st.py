"""``st:NAME_OR_PATH``: sentence-transformers models through their own pipeline (issue 18 section 2)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whitenclip.encoders import load_encoder, minilm_model_dir, parse_spec
from whitenclip.errors import InputError, WhitenclipError

SHARED_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k" / "all_captions.txt"


def _captions(n: int = 300) -> list[str]:
    """~300 Flickr8k captions (synthetic ones of that style when the data is absent), with empty-after-strip
    and very long captions (past the 256 word-piece limit) among them."""
    if SHARED_CAPTIONS.exists():
        with open(SHARED_CAPTIONS, newline="", encoding="utf-8") as f:
            rows = [r["caption"] for _, r in zip(range(n - 8), csv.DictReader(f))]
    else:
        rng = np.random.default_rng(0)
        words = "a the dog child man woman girl boy runs jumps sits on in with red blue grass water ball beach".split()
        rows = [" ".join(rng.choice(words, size=rng.integers(3, 25))) + " ." for _ in range(n - 8)]
    odd = ["", "   ", "\t \n", " .", "A dog " * 400, "a very long caption, " * 300, "x" * 5000, "ok"]
    out = rows[:]
    for i, s in enumerate(odd):
        out.insert(37 * i, s)
    return out


@pytest.fixture(scope="module")
def st_dir() -> str:
    return str(minilm_model_dir())


@pytest.fixture(scope="module")
def reference(st_dir):
    from sentence_transformers import SentenceTransformer

    texts = _captions()
    ref = SentenceTransformer(st_dir, device="cpu", local_files_only=True).encode(texts, show_progress_bar=False)
    return texts, ref


def test_st_equals_sentence_transformer_encode(st_dir, reference):
    """Batched by length (batches of 32, ragged), the rows equal SentenceTransformer.encode to 1e-5."""
    texts, ref = reference
    enc = load_encoder(f"st:{st_dir}", device="cpu")
    assert enc.spec == f"st:{os.path.abspath(st_dir)}" and enc.dim == 384 and enc.modalities == ("text",)
    X = enc.encode(texts, modality="text", batch_size=32)
    assert X.shape == (len(texts), 384) and X.dtype == np.float32
    np.testing.assert_allclose(X, ref, atol=1e-5, rtol=0)
    # the model has a Normalize layer: unit rows, as encode gives
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    meta = enc.meta()
    assert meta["encoder"] == enc.spec and meta["normalized"] is False
    assert meta["activation"] == "gelu" and re.fullmatch(r"[0-9a-f]{12}", meta["encoder_fingerprint"])


def test_minilm_stays_raw_and_normalized_equals_st(st_dir, reference):
    """Why ``minilm`` is not an alias of ``st:``: it keeps the raw mean-pooled features (W-CLIP whitens
    raw features, and old whiteners record them); its ``--normalize`` output is what ``st:`` gives."""
    texts, ref = reference
    sub = slice(0, 120)
    raw = load_encoder("minilm", device="cpu").encode(texts[sub], modality="text")
    unit = load_encoder("minilm", normalize=True, device="cpu").encode(texts[sub], modality="text")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(unit, ref[sub], atol=1e-5, rtol=0)


def test_st_specs():
    assert str(parse_spec("st:sentence-transformers/all-MiniLM-L6-v2")) == "st:sentence-transformers/all-MiniLM-L6-v2"
    assert str(parse_spec("st:./rel/model")) == f"st:{os.path.abspath('rel/model')}"
    with pytest.raises(InputError, match=r"expected st:NAME_OR_PATH"):
        parse_spec("st:")
    with pytest.raises(InputError, match=r"expected st:NAME_OR_PATH"):
        parse_spec("st")


def test_st_missing_folder_and_offline_hub_name_fail_in_one_line(tmp_path, monkeypatch):
    from test_encoders import _assert_uncached_offline_refusal, _use_hub

    from whitenclip.encoders import hub

    with pytest.raises(WhitenclipError, match=rf"^cannot load st:{tmp_path}/nope: model folder {tmp_path}/nope "
                                              r"not found; offline choices: .*'minilm'$"):
        load_encoder(f"st:{tmp_path}/nope", device="cpu")
    _assert_uncached_offline_refusal(monkeypatch, tmp_path / "home", "st:all-mpnet-base-v2",
                                     "sentence-transformers/all-mpnet-base-v2")

    # network down: one probe, then one line
    _use_hub(monkeypatch, tmp_path / "home", offline=False)
    monkeypatch.setattr(hub, "probe_network", lambda url, timeout=0: "Name or service not known")
    with pytest.raises(WhitenclipError, match=r"^cannot load st:org/model: hub repo org/model is not cached .* "
                                              r"huggingface.co cannot be reached \(Name or service not known\)"):
        load_encoder("st:org/model", device="cpu")


def test_fit_captions_with_st_end_to_end(st_dir, tmp_path):
    """`whitenclip fit captions.txt --model st:DIR` in a subprocess: the whitener records the encoder and
    its fingerprint, and its mean is the mean of SentenceTransformer.encode over the captions. A whitener
    in the older form (fingerprint inside ``activation``) scores raw captions, and is refused (exit 2, one
    line naming both fingerprints) when its fingerprint is not the model's."""
    from sentence_transformers import SentenceTransformer

    from whitenclip.whitening import Whitener

    texts = [t for t in _captions(80) if t.strip()]
    caps = tmp_path / "captions.txt"
    caps.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "wh.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "whitenclip.cli", "fit", str(caps), "--model", f"st:{st_dir}",
                           "--device", "cpu", "-o", str(out), "--no-calibration"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wh = Whitener.load(out)
    fp = load_encoder(f"st:{st_dir}", device="cpu").fingerprint
    assert wh.metadata_["encoder"] == f"st:{st_dir}" and wh.metadata_["activation"] == "gelu"
    assert wh.metadata_["encoder_fingerprint"] == fp
    ref = SentenceTransformer(st_dir, device="cpu", local_files_only=True).encode(texts, show_progress_bar=False)
    np.testing.assert_allclose(wh.mean_, ref.astype(np.float64).mean(0), atol=1e-6)
    json.dumps(wh.metadata_)  # recorded metadata stays JSON

    from typer.testing import CliRunner

    from whitenclip.cli import app

    for stored_fp, code in ((fp, 0), ("0123456789ab", 2)):
        del wh.metadata_["encoder_fingerprint"]
        wh.metadata_["activation"] = f"gelu (st {stored_fp})"
        old = tmp_path / f"old-{code}.safetensors"
        wh.save(old)
        assert Whitener.load(old).metadata_["encoder_fingerprint"] == stored_fp
        res = CliRunner().invoke(app, ["score", str(caps), "-w", str(old), "--device", "cpu"])
        assert res.exit_code == code, res.stderr
        wh.metadata_["encoder_fingerprint"] = fp
    assert len(res.stdout.splitlines()) == 0 and res.stderr.strip().splitlines()[-1] == (
        f"whitenclip: error: {caps}: the whitener was embedded by st:{st_dir} with model fingerprint 0123456789ab, "
        f"but the model loaded from there now has fingerprint {fp} (other weights, config or preprocessing); "
        "refit with this model, or restore the model it was fitted with")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(act=st.text(max_size=30), kind=st.sampled_from(["hf", "st"]), fp=st.text("0123456789abcdef", min_size=12,
                                                                                 max_size=12))
def test_split_encoder_meta_reads_the_older_form(act, kind, fp):
    """``ACT (hf|st FP)`` splits into activation ACT and encoder_fingerprint FP; anything else is kept as is."""
    from whitenclip.encoders import split_encoder_meta

    meta = {"encoder": "st:/m", "activation": act}
    if act.strip() and "\n" not in act and "\r" not in act:
        old = split_encoder_meta({**meta, "activation": f"{act} ({kind} {fp})"})
        assert old == {**meta, "encoder_fingerprint": fp}
    assert split_encoder_meta({**meta, "encoder_fingerprint": fp}) == {**meta, "encoder_fingerprint": fp}
    if not act.endswith(")"):
        assert split_encoder_meta(meta) == meta
    assert split_encoder_meta({}) == {} and split_encoder_meta({"activation": None}) == {"activation": None}
