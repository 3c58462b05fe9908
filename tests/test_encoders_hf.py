"""``hf:NAME_OR_PATH``: transformers vision-language models, checked offline on a tiny random CLIP
saved with ``save_pretrained`` (issue 18 section 1)."""

import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from whitenclip.encoders import load_encoder, parse_spec
from whitenclip.errors import InputError, WhitenclipError

CAPTIONS = ["a dog", "", "two children are playing with a red ball on the beach near the water",
            "x", "A man in a blue shirt rides a bicycle down a dirt road .", "cat " * 40, "  spaces  around  "]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (byte-level BPE alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (2 layers, width 32, 30 px images, 16-d features), its CLIPImageProcessor and a
    CLIP tokenizer over a byte-level vocabulary (no merges), saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    if "vocab" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 5
        tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    else:  # pragma: no cover - transformers 4: files
        import json

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    eos = vocab["<|endoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=30, patch_size=6),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Seven images of different sizes and formats (RGB, grayscale, RGBA PNG, JPEG)."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w, mode, ext) in enumerate([(40, 50, "RGB", "jpg"), (64, 31, "RGB", "png"), (30, 30, "L", "png"),
                                           (90, 120, "RGBA", "png"), (33, 77, "RGB", "jpg"), (50, 50, "RGB", "png"),
                                           (120, 45, "RGB", "jpg")]):
        arr = rng.integers(0, 256, (h, w, len(mode)) if mode != "L" else (h, w), dtype=np.uint8)
        p = d / f"im{i}.{ext}"
        Image.fromarray(arr, mode).save(p)
        out.append(str(p))
    return out


def _direct(folder: Path):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder),
            AutoImageProcessor.from_pretrained(folder))


def _pooled(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_hf_images_and_captions_equal_direct_features(tiny, images):
    """Batched (3 per batch, ragged captions sorted by length, one truncated) rows equal a direct
    get_image_features / get_text_features of each item alone, to 1e-5."""
    from whitenclip.encoders import TruncationWarning

    model, tok, proc = _direct(tiny)
    enc = load_encoder(f"hf:{tiny}", device="cpu")
    assert enc.spec == f"hf:{tiny}" and enc.dim == 16 and enc.modalities == ("image", "text")
    with torch.inference_mode():
        want_img = np.concatenate([
            _pooled(model.get_image_features(**proc(images=Image.open(p).convert("RGB"), return_tensors="pt")))
            for p in images]).astype(np.float32)
        want_txt = np.concatenate([
            _pooled(model.get_text_features(**tok([c], truncation=True, max_length=16, return_tensors="pt")))
            for c in CAPTIONS]).astype(np.float32)
    got_img = enc.encode(images, modality="image", batch_size=3)
    np.testing.assert_allclose(got_img, want_img, atol=1e-5, rtol=0)
    long = sum(len(ids) > 16 for ids in tok(CAPTIONS)["input_ids"])
    assert 0 < long < len(CAPTIONS)
    with pytest.warns(TruncationWarning, match=rf"^hf:{tiny}: {long} of 7 captions are longer than 16 tokens"):
        got_txt = enc.encode(CAPTIONS, modality="text", batch_size=3)
    np.testing.assert_allclose(got_txt, want_txt, atol=1e-5, rtol=0)
    assert np.abs(want_txt).max() > 1e-2  # not trivially zero
    unit = load_encoder(f"hf:{tiny}", normalize=True, device="cpu").encode(images[:3], modality="image")
    np.testing.assert_allclose(unit, want_img[:3] / np.linalg.norm(want_img[:3], axis=1, keepdims=True), atol=1e-5)
    meta = enc.meta("image")
    assert meta["encoder"] == f"hf:{tiny}" and meta["activation"] == "quick_gelu"
    assert re.fullmatch(r"[0-9a-f]{12}", meta["encoder_fingerprint"]) and meta["encoder_fingerprint"] == enc.fingerprint


def _tiny_siglip(folder: Path, version: int = 1) -> Path:
    """A random SiglipModel (2 layers, width 32, 30 px images, 32-d features) and its SiglipImageProcessor,
    or (``version=2``) a Siglip2Model and Siglip2ImageProcessor (6 px patches, at most 16 per image, kept
    aspect ratio: pixel_attention_mask and spatial_shapes vary by image), saved with save_pretrained.
    The tokenizer is a Siglip2Tokenizer (Gemma-style BPE over a byte-fallback vocabulary, no merges) for
    both: the SigLIP sentencepiece tokenizer needs a trained .model file and the sentencepiece package,
    neither available offline."""
    import transformers
    from transformers import Siglip2Tokenizer

    prefix = "Siglip" if version == 1 else "Siglip2"
    config_cls, model_cls, processor_cls = (getattr(transformers, prefix + name)
                                            for name in ("Config", "Model", "ImageProcessor"))
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", *"abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(pieces)}
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=6,
                  **({"image_size": 30} if version == 1 else {"num_patches": 16}))
    cfg = config_cls(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                         eos_token_id=1, projection_size=32),  # SigLIP: the vision width
        vision_config=vision,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_cls(cfg).eval()
    model.save_pretrained(folder)
    Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(folder)
    sizes = {"size": {"height": 30, "width": 30}} if version == 1 else {"patch_size": 6, "max_num_patches": 16}
    processor_cls(**sizes).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("version", [1, 2])
def test_hf_siglip_equals_direct_features(images, tmp_path, version):
    """SigLIP and SigLIP2 through hf:DIR: batched rows (captions padded to the maximum length, as SigLIP was
    trained; SigLIP2's patch masks and shapes batched with the patches) equal direct get_image_features /
    get_text_features of each item alone, to 1e-5."""
    folder = _tiny_siglip(tmp_path / "tiny-siglip", version)
    model, tok, proc = _direct(folder)
    enc = load_encoder(f"hf:{folder}", device="cpu")
    assert type(model).__name__ == ("SiglipModel" if version == 1 else "Siglip2Model")
    assert enc.dim == 32 and enc.max_length == 16
    assert enc.meta("text")["activation"] == "gelu_pytorch_tanh" and enc.fingerprint

    def text(c, padding):
        return _pooled(model.get_text_features(**tok([c], padding=padding, truncation=True, max_length=16,
                                                     return_tensors="pt")))

    with torch.inference_mode():
        want_img = np.concatenate([
            _pooled(model.get_image_features(**proc(images=Image.open(p).convert("RGB"), return_tensors="pt")))
            for p in images]).astype(np.float32)
        want_txt = np.concatenate([text(c, "max_length") for c in CAPTIONS]).astype(np.float32)
        unpadded = np.concatenate([text(c, "longest") for c in CAPTIONS[:1]]).astype(np.float32)
    np.testing.assert_allclose(enc.encode(images, modality="image", batch_size=3), want_img, atol=1e-5, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation: counted in the CLIP test
        got_txt = enc.encode(CAPTIONS, modality="text", batch_size=3)
    np.testing.assert_allclose(got_txt, want_txt, atol=1e-5, rtol=0)
    assert np.abs(got_txt[:1] - unpadded).max() > 1e-3  # the padding matters: "longest" would fail the test


def test_features_from_both_return_shapes():
    """transformers 5 returns BaseModelOutputWithPooling (pooler_output = projected features); 4 a tensor."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from whitenclip.encoders.hf import _features

    x = torch.arange(6.0).reshape(2, 3)
    assert _features(x) is x
    assert _features(BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 4, 8), pooler_output=x)) is x
    with pytest.raises(WhitenclipError, match="without pooler_output"):
        _features(BaseModelOutputWithPooling(last_hidden_state=x))


def test_fingerprint_tells_models_apart(tiny, tmp_path):
    """Same architecture, other weights: the same activation, a different fingerprint (so whiteners are refused)."""
    from whitenclip.encoders import check_activation

    other = _tiny_clip(tmp_path / "other", seed=1)
    a = load_encoder(f"hf:{tiny}", device="cpu")
    assert load_encoder(f"hf:{tiny}", device="cpu").fingerprint == a.fingerprint
    b = load_encoder(f"hf:{other}", device="cpu")
    assert b.activation == a.activation == "quick_gelu" and b.fingerprint != a.fingerprint
    check_activation(b, {"activation": "quick_gelu"}, "W")  # older artifacts without a fingerprint: no check
    with pytest.raises(InputError, match=rf"^W was embedded by hf:{other} with model fingerprint {a.fingerprint}, "
                                         rf"but the model loaded from there now has fingerprint {b.fingerprint} "):
        check_activation(b, a.meta("image"), "W")


def test_hf_specs_and_one_line_failures(tmp_path, monkeypatch):
    from test_encoders import _assert_uncached_offline_refusal
    from transformers import BertConfig, BertModel

    assert str(parse_spec("hf:openai/clip-vit-base-patch32")) == "hf:openai/clip-vit-base-patch32"
    assert str(parse_spec("hf:~/m")) == f"hf:{os.path.expanduser('~/m')}"
    for bad in ("hf:", "hf", "hf:  "):
        with pytest.raises(InputError, match=r"expected hf:NAME_OR_PATH"):
            parse_spec(bad)
    with pytest.raises(WhitenclipError, match=rf"^cannot load hf:{tmp_path}/nope: model folder .* not found; "
                                              r"offline choices: .*'minilm'$"):
        load_encoder(f"hf:{tmp_path}/nope", device="cpu")
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(bert)
    with pytest.raises(WhitenclipError, match=r"^cannot load hf:.*/bert: BertModel has no get_image_features or "
                                              r"get_text_features; hf: needs a vision-language model"):
        load_encoder(f"hf:{bert}", device="cpu")
    _assert_uncached_offline_refusal(monkeypatch, tmp_path / "home", "hf:openai/clip-vit-base-patch32",
                                     "openai/clip-vit-base-patch32", advice="a local model folder hf:")


def _cli(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "whitenclip.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_fit_images_with_hf_end_to_end_and_refuse_another_model(tiny, images, tmp_path):
    """`whitenclip fit images/ --model hf:DIR` in a subprocess: the whitener's mean is the mean of the direct
    image features; scoring raw images after DIR holds another model is refused (exit 2, one line)."""
    import shutil

    from whitenclip.whitening import Whitener

    folder = tmp_path / "images"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny, model_dir)
    out = tmp_path / "wh.safetensors"
    proc = _cli("fit", str(folder), "--model", f"hf:{model_dir}", "--device", "cpu", "-o", str(out),
                "--no-calibration", "--num-workers", "0")
    assert proc.returncode == 0, proc.stderr
    wh = Whitener.load(out)
    fp = load_encoder(f"hf:{model_dir}", device="cpu").fingerprint
    assert wh.metadata_["encoder"] == f"hf:{model_dir}" and wh.metadata_["activation"] == "quick_gelu"
    assert wh.metadata_["encoder_fingerprint"] == fp
    model, _, proc_ = _direct(tiny)
    with torch.inference_mode():
        feats = np.concatenate([
            _pooled(model.get_image_features(**proc_(images=Image.open(p).convert("RGB"), return_tensors="pt")))
            for p in sorted(folder.iterdir())]).astype(np.float64)
    np.testing.assert_allclose(wh.mean_, feats.mean(0), atol=1e-5)

    old = tmp_path / "old.safetensors"  # as whitenclip wrote it before encoder_fingerprint had its own key
    recorded = dict(wh.metadata_)
    _old_form(wh, "hf").save(old)
    assert wh.metadata_["activation"] == f"quick_gelu (hf {fp})" and "encoder_fingerprint" not in wh.metadata_
    assert Whitener.load(old).metadata_ == recorded  # read in today's form
    accepted = _score(folder, old)
    assert accepted.exit_code == 0, accepted.stderr
    assert len(accepted.stdout.splitlines()) == 1 + len(images)

    shutil.rmtree(model_dir)
    _tiny_clip(model_dir, seed=1)
    new_fp = load_encoder(f"hf:{model_dir}", device="cpu").fingerprint
    refused = _cli("score", str(folder), "-w", str(out), "--device", "cpu", "--num-workers", "0")
    assert refused.returncode == 2, refused.stderr
    err = refused.stderr.strip().splitlines()[-1]  # the line before: no calibration in this whitener
    assert "Traceback" not in refused.stderr and err.startswith("whitenclip: error: ")
    want = (f"{folder}: the whitener was embedded by hf:{model_dir} with model fingerprint {fp}, but the model "
            f"loaded from there now has fingerprint {new_fp} (other weights, config or preprocessing); "
            "refit with this model, or restore the model it was fitted with")
    assert err == f"whitenclip: error: {want}"
    refused_old = _score(folder, old)  # the old form is checked too
    assert refused_old.exit_code == 2 and refused_old.stderr.strip().splitlines()[-1] == err, refused_old.stderr


def _score(folder, whitener):
    """``whitenclip score FOLDER -w WHITENER`` in this process."""
    from typer.testing import CliRunner

    from whitenclip.cli import app

    return CliRunner().invoke(app, ["score", str(folder), "-w", str(whitener), "--device", "cpu",
                                    "--num-workers", "0"])


def _old_form(wh, kind: str):
    """``wh`` with its fingerprint inside ``activation`` ("quick_gelu (hf 0123456789ab)"), as artifacts and
    stores were written before ``encoder_fingerprint``."""
    meta = dict(wh.metadata_)
    meta["activation"] = f"{meta['activation']} ({kind} {meta.pop('encoder_fingerprint')})"
    wh.metadata_ = meta
    return wh


def test_old_form_store_reads_and_resumes(tiny, images, tmp_path):
    """A store whose meta.json holds the fingerprint inside ``activation`` (no ``encoder_fingerprint``) reads
    with the two keys split, and `embed` resumes it with the same model; another model there is refused."""
    import json
    import shutil

    from typer.testing import CliRunner

    from whitenclip.cli import app
    from whitenclip.readers.plan import open_embeddings

    model_dir = tmp_path / "model"
    shutil.copytree(tiny, model_dir)
    enc = load_encoder(f"hf:{model_dir}", device="cpu")
    store = tmp_path / "store"
    args = ["embed", *images[:4], "-o", str(store), "--model", f"hf:{model_dir}", "--device", "cpu",
            "--num-workers", "0", "--shard-items", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    meta = json.loads((store / "meta.json").read_text())
    assert meta["activation"] == "quick_gelu" and meta["encoder_fingerprint"] == enc.fingerprint
    meta["activation"] = f"quick_gelu (hf {meta.pop('encoder_fingerprint')})"
    (store / "meta.json").write_text(json.dumps(meta))
    ef = open_embeddings(str(store))
    assert ef.meta["activation"] == "quick_gelu" and ef.meta["encoder_fingerprint"] == enc.fingerprint
    np.testing.assert_allclose(np.concatenate([X for _, X in ef.iter_chunks(10)]),
                               enc.encode(images[:4], modality="image"), atol=1e-5)
    (store / "shard-00001.npy").unlink()  # a killed run: the second shard is missing
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    assert "resuming after item 2" in res.stderr and open_embeddings(str(store)).n_rows == 4
    (store / "shard-00001.npy").unlink()
    shutil.rmtree(model_dir)
    _tiny_clip(model_dir, seed=1)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert f"existing store has encoder_fingerprint={enc.fingerprint!r}, this run has " in res.stderr
