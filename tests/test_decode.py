"""The fast image path (``decode="gpu"``): JPEG bytes decoded with torchvision, EXIF-oriented and
resized/cropped/normalised as tensors, against the PIL reference preprocessing; its CPU fallbacks,
skips, OOM split/retry and prefetch thread. Everything runs on the CPU with device="cpu" (the same
functions the CUDA path runs); tests marked ``gpu`` need a CUDA device and are skipped without one
(``benchmarks/gpu_check.sh`` runs them on a lent device).

Stated tolerance of the tensor preprocessing against PIL (uint8 pixels after resize + centre crop):
at most 3 grey levels on any pixel and at most 0.02 level on average, for the shipped photos, the
Flickr8k photos and the odd files made here (EXIF-rotated, grayscale, progressive, 4:4:4, tiny and
large JPEGs). CMYK JPEGs and PNGs (alpha, palette) go to the PIL fallback and are bit-identical.
"""

from __future__ import annotations

import glob
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from whitenclip.encoders import (
    DecodeFallbackWarning,
    TensorPreprocess,
    _BytesDataset,
    _exif_orient,
    _forward_images,
    _in_background,
    decode_jpegs,
    embed,
    embed_items,
    jpeg_header,
    load_encoder,
    split_transform,
)
from whitenclip.errors import InputError, WhitenclipError
from whitenclip.readers.collect import collect_inputs
from whitenclip.readers.images import load_image
from whitenclip.readers.items import InputSkipWarning

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(glob.glob(str(REPO / "data" / "images" / "*")))
FLICKR = next((d for d in (REPO.parent / "shared" / "datasets" / "flickr8k" / "images",
                           REPO / ".whl" / "flickr8k-images")  # the copy gpu_check.sh carries to a device
               if d.is_dir()), REPO.parent / "shared" / "datasets" / "flickr8k" / "images")
TINY = "openclip:wc-tiny/none"
SMALL = "openclip:wc-small/none"
MAX_LEVELS = 3  # measured: 2 at 224 px, 3 at 32 px (one Flickr8k photo); 0.05-0.07% of pixels differ
MEAN_LEVELS = 0.02

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def gpu(fn):
    """A test that runs only where CUDA is (``-m gpu`` selects them)."""
    return pytest.mark.gpu(cuda(fn))


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TINY, device="cpu")


@pytest.fixture(scope="module")
def small():
    return load_encoder(SMALL, device="cpu")


def _clip224():
    import open_clip

    return open_clip.image_transform(224, is_train=False)


def _bytes(path) -> torch.Tensor:
    return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)


def tensor_pixels(paths, transform, device="cpu") -> np.ndarray:
    """uint8 (m, H, W, 3) from the tensor path: header, decode on ``device``, orient, resize + crop."""
    prep = TensorPreprocess.from_transform(transform)
    heads = [jpeg_header(Path(p).read_bytes()) for p in paths]
    assert all(why is None for why, _ in heads), heads
    imgs = decode_jpegs([_bytes(p) for p in paths], device)
    out = prep.resize_crop([_exif_orient(im, o) for im, (_, o) in zip(imgs, heads)])
    return out.permute(0, 2, 3, 1).cpu().numpy()


def pil_pixels(paths, transform) -> np.ndarray:
    pil_stage = split_transform(transform)[0]
    return np.stack([np.asarray(pil_stage(load_image(p))) for p in paths])


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """JPEGs and PNGs of every awkward kind, made from a shipped photo."""
    d = tmp_path_factory.mktemp("odd")
    base = Image.open(REPO / "data" / "images" / "01-sunset.jpg").convert("RGB").crop((0, 0, 150, 110))
    files = {}
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        files[f"exif{o}"] = d / f"exif{o}.jpg"
        base.save(files[f"exif{o}"], quality=90, exif=exif.tobytes())
    files["gray"] = d / "gray.jpg"
    base.convert("L").save(files["gray"], quality=90)
    files["progressive"] = d / "progressive.jpg"
    base.save(files["progressive"], quality=85, progressive=True)
    files["yuv444"] = d / "yuv444.jpg"
    base.save(files["yuv444"], quality=95, subsampling=0)
    files["large"] = d / "large.jpg"
    base.resize((1100, 807), Image.LANCZOS).save(files["large"], quality=90)
    files["tiny"] = d / "tiny.jpg"
    base.resize((23, 17), Image.LANCZOS).save(files["tiny"], quality=90)
    files["cmyk"] = d / "cmyk.jpg"
    base.convert("CMYK").save(files["cmyk"], quality=90)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    files["alpha"] = d / "alpha.png"
    rgba.save(files["alpha"])
    files["palette"] = d / "palette.png"
    base.convert("P", palette=Image.ADAPTIVE, colors=64).save(files["palette"], transparency=3)
    return {k: str(v) for k, v in files.items()}


# --------------------------------------------------------------------------- pieces


def test_preprocess_is_read_from_open_clip_transforms(tiny):
    import open_clip
    from torchvision import transforms as T

    p = TensorPreprocess.from_transform(_clip224())
    assert (p.size, p.crop, p.mode, p.max_size) == (224, (224, 224), "bicubic", None)
    np.testing.assert_allclose(p.mean, open_clip.OPENAI_DATASET_MEAN)
    np.testing.assert_allclose(p.std, open_clip.OPENAI_DATASET_STD)
    assert TensorPreprocess.from_transform(tiny.image_transform).crop == (32, 32)
    squash = open_clip.image_transform(224, is_train=False, resize_mode="squash")
    longest = open_clip.image_transform(224, is_train=False, resize_mode="longest")
    for other in (squash, longest, lambda im: im,
                  T.Compose([T.Resize(64, antialias=False), T.CenterCrop(64), T.ToTensor(), T.Normalize([0], [1])]),
                  T.Compose([T.Resize(64), T.CenterCrop(64), T.Grayscale(), T.ToTensor(), T.Normalize([0], [1])])):
        assert TensorPreprocess.from_transform(other) is None


def test_exif_orientations_equal_pil_exif_transpose(odd_files):
    from PIL import ImageOps

    arr = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    img = torch.from_numpy(arr).permute(2, 0, 1)
    for o in range(1, 9):
        im = Image.fromarray(arr)
        exif = im.getexif()
        exif[0x0112] = o
        im.info["exif"] = exif.tobytes()
        ref = np.asarray(ImageOps.exif_transpose(im))
        assert np.array_equal(_exif_orient(img, o).permute(1, 2, 0).numpy(), ref), o
        assert jpeg_header(Path(odd_files[f"exif{o}"]).read_bytes()) == (None, o)


def test_headers_route_what_the_tensor_decoder_cannot_match(odd_files, tmp_path):
    assert jpeg_header(Path(odd_files["gray"]).read_bytes()) == (None, 1)
    assert jpeg_header(Path(odd_files["progressive"]).read_bytes()) == (None, 1)
    assert jpeg_header(Path(odd_files["cmyk"]).read_bytes())[0] == "CMYK JPEG"
    assert jpeg_header(Path(odd_files["alpha"]).read_bytes())[0] == "not a JPEG (PNG)"
    whole = Path(odd_files["large"]).read_bytes()
    assert jpeg_header(whole + b"\x00" * 7) == (None, 1)  # padding after the end marker is fine
    assert jpeg_header(whole[:4000])[0] == "no JPEG end marker"  # truncated: PIL decides, as with --decode cpu
    with pytest.raises(Exception, match="cannot identify"):
        jpeg_header(b"no image here")


def test_a_device_that_cannot_decode_is_refused_or_skipped_by_auto(small, monkeypatch):
    import whitenclip.encoders.decoding as E

    assert E.device_decoder_error("cpu") is None
    monkeypatch.setattr(E, "_DECODER_CHECKED", {"cpu": "Not compiled with GPU support"})
    with pytest.raises(WhitenclipError, match=r"--decode gpu: torchvision cannot decode JPEGs on cpu here \(Not comp"):
        E.resolve_decode("gpu", small)
    fake = load_encoder(SMALL, device="cpu")
    fake.device = torch.device("cuda")  # only resolve_decode looks at it
    monkeypatch.setattr(E, "_DECODER_CHECKED", {"cuda": "Not compiled with GPU support"})
    assert E.resolve_decode("auto", fake) == "pil"
    monkeypatch.setattr(E, "_DECODER_CHECKED", {"cuda": None})
    assert E.resolve_decode("auto", fake) == "gpu"


def test_decode_jpegs_isolates_a_bad_file_in_a_batch(odd_files, tmp_path):
    good = [odd_files[k] for k in ("exif1", "gray", "progressive", "yuv444", "tiny")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(good[0]).read_bytes()[:300])  # a valid header, then nothing
    datas = [_bytes(p) for p in good[:2]] + [_bytes(broken)] + [_bytes(p) for p in good[2:]]
    out = decode_jpegs(datas, "cpu")
    assert len(out) == 6 and isinstance(out[2], Exception)
    for k, p in zip([0, 1, 3, 4, 5], good):
        ref = np.asarray(load_image(p))
        got = out[k].permute(1, 2, 0).numpy()
        assert out[k].dtype == torch.uint8 and got.shape == ref.shape
        assert np.abs(got.astype(int) - ref).max() <= 1  # libjpeg-turbo on both sides: the same pixels
    assert decode_jpegs([], "cpu") == []


# --------------------------------------------------------------------------- pixels against PIL


def _assert_close_to_pil(paths, transform, label):
    ours = tensor_pixels(paths, transform).astype(int)
    ref = pil_pixels(paths, transform).astype(int)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    assert diff.max() <= MAX_LEVELS, (label, diff.max())
    assert diff.mean() <= MEAN_LEVELS, (label, diff.mean())
    return diff


def test_tensor_preprocessing_equals_pil_on_shipped_photos(tiny):
    jpgs = [p for p in SHIPPED if p.endswith(".jpg")]
    for transform in (_clip224(), tiny.image_transform):  # 160x120 -> 224 (up), -> 32 (down, antialiased)
        _assert_close_to_pil(jpgs, transform, "shipped")


def test_tensor_preprocessing_equals_pil_on_odd_jpegs(odd_files, tiny):
    keys = [f"exif{o}" for o in range(1, 9)] + ["gray", "progressive", "yuv444", "large", "tiny"]
    for transform in (_clip224(), tiny.image_transform):
        _assert_close_to_pil([odd_files[k] for k in keys], transform, "odd")


def test_tensor_preprocessing_equals_pil_on_flickr8k(tiny):
    if not FLICKR.is_dir():
        pytest.skip(f"real data not available: {FLICKR} is absent")
    paths = sorted(glob.glob(str(FLICKR / "*.jpg")))
    assert len(paths) >= 100
    diff = _assert_close_to_pil(paths, _clip224(), "flickr8k")
    assert (diff > 0).mean() < 0.001  # nearly every pixel identical
    diff = _assert_close_to_pil(paths, tiny.image_transform, "flickr8k small")
    assert (diff > 0).mean() < 0.001


def test_workers_fall_back_to_pil_exactly_for_cmyk_and_png(odd_files, tiny):
    pil_stage = split_transform(tiny.image_transform)[0]
    ds = _BytesDataset([odd_files[k] for k in ("cmyk", "alpha", "palette", "exif6")], pil_stage, 10)
    recs = [ds[i] for i in range(len(ds))]
    assert [(r[0], r[1], r[3]) for r in recs[:3]] == [(10, "cpu", "CMYK JPEG"), (11, "cpu", "not a JPEG (PNG)"),
                                                     (12, "cpu", "not a JPEG (PNG)")]
    for r, k in zip(recs, ("cmyk", "alpha", "palette")):
        assert np.array_equal(r[2].numpy(), np.asarray(pil_stage(load_image(odd_files[k]))))
    assert recs[3][1] == "jpeg" and recs[3][2][1] == 6


# --------------------------------------------------------------------------- the pipeline on device="cpu"


def _mixed_set(odd_files, tmp_path):
    """Good JPEGs, CMYK/PNG fallbacks, and a corrupt and a truncated file in the middle."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(odd_files["large"]).read_bytes()[:2000])
    jpgs = [p for p in SHIPPED if p.endswith(".jpg")]
    paths = (jpgs[:3] + [odd_files["exif6"], odd_files["cmyk"], str(corrupt), odd_files["alpha"], str(truncated)]
             + jpgs[3:] + [odd_files["gray"], odd_files["progressive"]])
    return paths, str(corrupt), str(truncated)


def test_gpu_style_pipeline_on_cpu_equals_the_pil_path(small, odd_files, tmp_path):
    paths, corrupt, truncated = _mixed_set(odd_files, tmp_path)
    with pytest.warns(InputSkipWarning):
        ids_ref, X_ref = embed(small, collect_inputs(paths), decode="cpu", batch_size=4, num_workers=0)
    inp = collect_inputs(paths)
    with pytest.warns(Warning) as rec:
        chunks = list(embed_items(small, inp, decode="gpu", batch_size=4, num_workers=2, chunk_size=6))
    ids = [i for c in chunks for i in c[0]]
    X = np.concatenate([c[1] for c in chunks])
    assert ids == ids_ref == [p for p in paths if p not in (corrupt, truncated)]
    assert [c[2] for c in chunks] == [6, 12, len(paths)]
    assert inp.skips.counts == {"corrupt image": 1, "truncated image": 1}
    fall = [str(w.message) for w in rec if w.category is DecodeFallbackWarning]
    assert fall == [f"{odd_files['cmyk']}: decoded on the CPU (CMYK JPEG)",
                    f"{odd_files['alpha']}: decoded on the CPU (not a JPEG (PNG))",
                    "decode gpu: 2 image(s) decoded on the CPU instead (1 CMYK JPEG, 1 not a JPEG (PNG))"]
    # a pixel level moves a normalised input by 1/255/std ~ 0.015; embeddings stay as close
    cos = (X * X_ref).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(X_ref, axis=1)
    assert cos.min() > 0.9999, cos.min()
    np.testing.assert_allclose(X, X_ref, atol=2e-3 * np.abs(X_ref).max())
    # strict mode stops at the first bad file, as the PIL path does
    with pytest.raises(InputError, match="corrupt.jpg: corrupt image.*strict"):
        list(embed_items(small, collect_inputs(paths, strict=True), decode="gpu", batch_size=4, num_workers=0))


def test_device_decoder_failure_falls_back_to_pil(small, odd_files, monkeypatch):
    import whitenclip.encoders.decoding as E

    paths = [odd_files[k] for k in ("exif1", "gray", "exif3")]
    real = E._decode_jpeg_call

    def flaky(datas, device):  # "nvjpeg" rejects the grayscale file, decodes the rest
        if any(len(d) == len(_bytes(odd_files["gray"])) for d in datas):
            raise RuntimeError("nvjpeg: unsupported sampling")
        return real(datas, device)

    monkeypatch.setattr(E, "_decode_jpeg_call", flaky)
    with pytest.warns(DecodeFallbackWarning, match=r"gray.jpg: decoded on the CPU \(device decoder failed: nvjpeg"):
        ids, X = embed(small, paths, modality="image", decode="gpu", num_workers=0)
    monkeypatch.undo()
    ids_ref, X_ref = embed(small, paths, modality="image", decode="cpu", num_workers=0)
    assert ids == ids_ref
    np.testing.assert_allclose(X[1], X_ref[1], rtol=1e-5, atol=1e-6)  # PIL's pixels exactly


# --------------------------------------------------------------------------- OOM split / retry


def _oom(msg="CUDA out of memory. Tried to allocate 2.00 GiB"):
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)(msg)


def test_oom_splits_and_retries_then_remembers_the_size(small):
    px = torch.randn(13, 3, 224, 224)
    with torch.inference_mode():
        ref = small.finish(small.embed_batch(px, "image"))
    calls = []

    class Fussy:  # the encoder, but batches above 4 run out of memory
        def __getattr__(self, name):
            return getattr(small, name)

        def embed_batch(self, batch, modality):
            calls.append(batch.shape[0])
            if batch.shape[0] > 4:
                raise _oom()
            return small.embed_batch(batch, modality)

    state = {}
    out = np.concatenate([r.get() for r in _forward_images(Fussy(), px, state, lambda k: f"img{k}")])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert calls == [13, 6, 3, 3, 3, 3, 1] and state["limit"] == 3  # the second half is cut to 3 at once
    calls.clear()
    _forward_images(Fussy(), px[:7], state, str)  # later batches too
    assert calls == [3, 3, 1]


def test_oom_of_a_single_image_is_one_line_naming_it(small, odd_files):
    class Hopeless:
        def __getattr__(self, name):
            return getattr(small, name)

        def embed_batch(self, batch, modality):
            raise _oom()

    with pytest.raises(WhitenclipError) as err:
        _forward_images(Hopeless(), torch.zeros(4, 3, 224, 224), {}, lambda k: f"img{k}.jpg")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("img0.jpg: out of memory on cpu even for 1 image with " + SMALL)
    assert "use --device cpu" in msg


def test_oom_through_embed_items_keeps_order_and_chunks(small, monkeypatch):
    paths = [p for p in SHIPPED if p.endswith(".jpg")] * 3
    ids_ref, X_ref = embed(small, paths, modality="image", batch_size=8, num_workers=0)
    real = small.embed_batch

    def fussy(batch, modality):
        if batch.shape[0] > 3:
            raise _oom()
        return real(batch, modality)

    monkeypatch.setattr(small, "embed_batch", fussy)
    for decode in ("cpu", "gpu"):
        chunks = list(embed_items(small, paths, modality="image", batch_size=8, num_workers=0, chunk_size=10,
                                  decode=decode))
        assert [c[2] for c in chunks] == [10, 18] and [i for c in chunks for i in c[0]] == ids_ref
        np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), X_ref, atol=2e-3 * np.abs(X_ref).max())


def test_oom_in_the_device_resize_splits_then_falls_back_to_pil(small, odd_files, monkeypatch):
    paths = [p for p in SHIPPED if p.endswith(".jpg")] + [odd_files["large"], odd_files["exif6"]]
    ids_ref, X_ref = embed(small, paths, modality="image", decode="gpu", batch_size=8, num_workers=0)
    real = TensorPreprocess.resize_crop
    calls = []
    big = max(Image.open(p).size[0] * Image.open(p).size[1] for p in paths)

    def fussy(self, images):  # more than 2 images, or the largest photo at all, do not fit
        calls.append(len(images))
        if len(images) > 2 or any(im.shape[-2] * im.shape[-1] == big for im in images):
            raise _oom("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, images)

    monkeypatch.setattr(TensorPreprocess, "resize_crop", fussy)
    with pytest.warns(DecodeFallbackWarning) as rec:
        ids, X = embed(small, paths, modality="image", decode="gpu", batch_size=8, num_workers=0)
    assert ids == ids_ref and calls[0] == len(paths) and max(calls[1:]) <= 4
    assert [str(w.message) for w in rec] == [f"{odd_files['large']}: decoded on the CPU (device resize out of "
                                             "memory: CUDA out of memory. Tried to allocate 1.00 GiB)"]
    monkeypatch.undo()
    ids_pil, X_pil = embed(small, paths, modality="image", decode="cpu", batch_size=8, num_workers=0)
    k = paths.index(odd_files["large"])
    np.testing.assert_allclose(X[k], X_pil[k], rtol=1e-5, atol=1e-6)  # PIL's pixels for the one left
    others = [j for j in range(len(paths)) if j != k]
    np.testing.assert_allclose(X[others], X_ref[others], rtol=1e-5, atol=1e-6)  # split batches: same pixels


# --------------------------------------------------------------------------- prefetch thread


def test_background_prefetch_keeps_order_bounds_and_errors():
    produced = []

    def gen(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"boom at {i}")
            produced.append(i)
            yield i

    assert list(_in_background(gen(50), depth=2)) == list(range(50))
    produced.clear()
    it = _in_background(gen(50), depth=2)
    assert next(it) == 0
    time.sleep(0.3)
    assert len(produced) <= 4  # bounded: one handed out, two queued, one waiting to be put
    it.close()
    time.sleep(0.3)
    assert not any(t.name == "whitenclip-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="boom at 3"):
        list(_in_background(gen(10, fail_at=3), depth=2))


def test_cli_decode_option(tmp_path, odd_files):
    from typer.testing import CliRunner

    from whitenclip.cli import app
    from whitenclip.readers.plan import read_embeddings

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in ("exif6", "gray", "cmyk"):
        (folder / Path(odd_files[k]).name).write_bytes(Path(odd_files[k]).read_bytes())
    runner = CliRunner()
    out = {}
    for decode in ("cpu", "gpu", "auto"):
        r = runner.invoke(app, ["embed", str(folder), "-o", str(tmp_path / decode), "--model", TINY,
                                "--device", "cpu", "--decode", decode, "--num-workers", "0"])
        assert r.exit_code == 0, r.output
        out[decode] = read_embeddings(str(tmp_path / decode))
        if decode == "gpu":
            assert "cmyk.jpg: decoded on the CPU (CMYK JPEG)" in r.output
    assert out["cpu"][0] == out["gpu"][0] == out["auto"][0]
    np.testing.assert_array_equal(out["cpu"][1], out["auto"][1])  # auto is cpu on a CPU device
    np.testing.assert_allclose(out["gpu"][1], out["cpu"][1], atol=2e-2 * np.abs(out["cpu"][1]).max())
    r = runner.invoke(app, ["embed", str(folder), "-o", str(tmp_path / "x"), "--model", TINY, "--decode", "nvjpeg"])
    assert r.exit_code == 2 and "nvjpeg" in r.output and "Traceback" not in r.output


def test_the_device_run_imports_only_what_the_device_image_has():
    """gpu_check.sh runs this file's gpu tests and bench_encode.py on a machine without hypothesis,
    pyarrow, dask, pandas, sentence-transformers: both must import without them."""
    import subprocess
    import sys

    like = [sys.executable, str(REPO / "benchmarks" / "device_like.py")]
    r = subprocess.run([*like, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-m", "gpu",
                        str(Path(__file__))], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and "8/" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([*like, str(REPO / "benchmarks" / "bench_encode.py"), "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and "--e2e" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([*like, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                        str(REPO / "tests" / "test_decode_sizes.py")], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode != 0 and "hypothesis" in r.stdout  # the guard works: that file needs hypothesis


# --------------------------------------------------------------------------- on a CUDA device


PRECISION_TOL = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
"""Stated tolerance of CUDA vs CPU embeddings: max |diff| / max |x_cpu| (random-weight ViT-B-32)."""


@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_embeddings_equal_cpu(precision):
    jpgs = [p for p in SHIPPED if p.endswith(".jpg")]
    cpu = load_encoder("openclip:ViT-B-32/none", device="cpu", precision="fp32")
    dev = load_encoder("openclip:ViT-B-32/none", device="cuda", precision=precision)
    ids_c, X_c = embed(cpu, jpgs, modality="image", decode="cpu", num_workers=0)
    ids_g, X_g = embed(dev, jpgs, modality="image", decode="cpu", num_workers=0)
    assert ids_c == ids_g
    rel = np.abs(X_g - X_c).max() / np.abs(X_c).max()
    print(f"{precision}: max |cuda - cpu| / max |cpu| = {rel:.2e}")
    assert rel <= PRECISION_TOL[precision]


@gpu
def test_cuda_decode_equals_cpu_decode(odd_files):
    keys = [f"exif{o}" for o in range(1, 9)] + ["gray", "progressive", "yuv444", "large", "tiny"]
    paths = [p for p in SHIPPED if p.endswith(".jpg")] + [odd_files[k] for k in keys]
    if FLICKR.is_dir():
        paths += sorted(glob.glob(str(FLICKR / "*.jpg")))[:100]
    imgs_g = decode_jpegs([_bytes(p) for p in paths], "cuda")
    imgs_c = decode_jpegs([_bytes(p) for p in paths], "cpu")
    rejected = [Path(p).name for p, g in zip(paths, imgs_g) if isinstance(g, Exception)]
    print(f"rejected by the device decoder (decoded with PIL by the pipeline): {rejected}")
    # plain baseline JPEGs must decode on the device; odd ones (gray, progressive, ...) may fall back
    assert not [r for r in rejected if not r.startswith(("gray", "progressive", "yuv444", "tiny", "large"))]
    means = []
    for p, g, c in zip(paths, imgs_g, imgs_c):
        if isinstance(g, Exception):
            continue
        assert g.device.type == "cuda" and g.shape == c.shape, p
        means.append((g.cpu().int() - c.int()).abs().float().mean().item())
    print(f"nvjpeg vs libjpeg-turbo: mean |diff| {np.mean(means):.3f}, worst image {max(means):.3f} grey levels")
    assert np.mean(means) <= 1.5 and max(means) <= 3.0  # IDCT/chroma upsampling differ by about a level
    ok = [p for p, g in zip(paths, imgs_g) if not isinstance(g, Exception)]
    pix_g = tensor_pixels(ok, _clip224(), "cuda").astype(int)
    pix_p = pil_pixels(ok, _clip224()).astype(int)
    print(f"decode gpu pixels vs PIL after resize + crop: mean |diff| {np.abs(pix_g - pix_p).mean():.3f}")
    assert np.abs(pix_g - pix_p).mean() <= 1.5
    enc = load_encoder("openclip:ViT-B-32/none", device="cuda", precision="fp32")
    ids_g, X_g = embed(enc, paths, modality="image", decode="gpu", num_workers=0)
    ids_c, X_c = embed(enc, paths, modality="image", decode="cpu", num_workers=0)
    cos = (X_g * X_c).sum(1) / np.linalg.norm(X_g, axis=1) / np.linalg.norm(X_c, axis=1)
    print(f"decode gpu vs cpu embeddings: min cosine {cos.min():.6f}")
    assert ids_g == ids_c and cos.min() > 0.999


@gpu
def test_cuda_decode_waits_for_the_callers_stream():
    """pytorch/vision#9606: nvjpeg writes on a private stream into blocks the caller's stream may
    still read. Queue slow work reading tensors, free them, decode: the reads must stay right."""
    jpgs = [p for p in SHIPPED if p.endswith(".jpg")]
    datas = [_bytes(p) for p in jpgs]
    ref = [im.cpu() for im in decode_jpegs(datas, "cuda")]
    torch.cuda.synchronize()
    bad_reads = bad_images = 0
    for _ in range(50):
        big = torch.randn(4096, 4096, device="cuda")
        for _ in range(8):  # tens of ms of queued work on the caller's stream
            big = big @ big / 64
        blocks = [torch.ones(int(im.numel()), dtype=torch.uint8, device="cuda") for im in ref]
        sums = [b.float().sum() for b in blocks]  # queued after the slow work, reading the blocks
        del blocks  # freed while the reads are still queued
        out = decode_jpegs(datas, "cuda")
        bad_reads += sum(int(s.item()) != int(im.numel()) for s, im in zip(sums, ref))
        bad_images += sum(not torch.equal(o.cpu(), r) for o, r in zip(out, ref))
    assert bad_reads == 0 and bad_images == 0, (bad_reads, bad_images)


@gpu
def test_cuda_oom_splits_and_retries():
    enc = load_encoder("openclip:wc-small/none", device="cuda", precision="fp32")
    jpgs = [p for p in SHIPPED if p.endswith(".jpg")] * 8  # 48 images
    ids_ref, X_ref = embed(enc, jpgs, modality="image", batch_size=48, num_workers=0)
    real = enc.model.encode_image
    block = 64 * 1024 * 1024  # each image of a batch asks for 64 MiB more: a real CUDA OOM above ~the limit

    def hungry(x, *a, **k):
        extra = torch.empty(x.shape[0] * block, dtype=torch.uint8, device=x.device)
        del extra
        return real(x, *a, **k)

    free, total = torch.cuda.mem_get_info()
    torch.cuda.empty_cache()
    limit = torch.cuda.memory_allocated() + 10 * block + 512 * 1024 * 1024
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total))
    enc.model.encode_image = hungry
    try:
        ids, X = embed(enc, jpgs, modality="image", batch_size=48, num_workers=0)
        assert ids == ids_ref
        np.testing.assert_allclose(X, X_ref, rtol=1e-4, atol=1e-4 * np.abs(X_ref).max())
        block *= 1024  # now even one image cannot fit: one line naming it
        with pytest.raises(WhitenclipError, match=r"out of memory on cuda.* even for 1 image"):
            embed(enc, jpgs[:4], modality="image", batch_size=4, num_workers=0)
    finally:
        enc.model.encode_image = real
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


@gpu
def test_simulate_on_cuda_gives_the_cpu_ordering():
    from whitenclip.simulate import make_config, simulate

    res = {}
    for device in ("cpu", "cuda"):
        cfg = make_config(losses="infonce,supervised", steps=120, seeds=1, n_eval=1000, evals=1, device=device)
        res[device] = {r.loss: r.final("ad_pass") for r in simulate(cfg).runs}
    print(f"simulate AD pass: {res}")
    for device in ("cpu", "cuda"):
        assert res[device]["infonce"] > 0.75 and res[device]["supervised"] < 0.2
    assert abs(res["cuda"]["infonce"] - res["cpu"]["infonce"]) < 0.15


@gpu
def test_cuda_multi_worker_decode_with_a_corrupt_file_in_the_middle(odd_files, tmp_path):
    enc = load_encoder("openclip:wc-small/none", device="cuda", precision="fp32")
    paths, corrupt, truncated = _mixed_set(odd_files, tmp_path)
    paths = paths * 4
    out = {}
    for decode in ("cpu", "gpu"):
        inp = collect_inputs(paths)
        with pytest.warns(InputSkipWarning):
            chunks = list(embed_items(enc, inp, decode=decode, batch_size=8, num_workers=4, chunk_size=16))
        out[decode] = ([i for c in chunks for i in c[0]], np.concatenate([c[1] for c in chunks]), inp.skips.counts)
    assert out["gpu"][0] == out["cpu"][0] == [p for p in paths if p not in (corrupt, truncated)]
    assert out["gpu"][2] == out["cpu"][2] == {"corrupt image": 4, "truncated image": 4}
    cos = (out["gpu"][1] * out["cpu"][1]).sum(1) / np.linalg.norm(out["gpu"][1], axis=1) \
        / np.linalg.norm(out["cpu"][1], axis=1)
    assert cos.min() > 0.999
