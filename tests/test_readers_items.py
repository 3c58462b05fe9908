"""Input discovery, caption parsing, image loading and skip reporting (whitenclip.readers.items)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from whitenclip.errors import InputError
from whitenclip.readers.captions import parse_captions
from whitenclip.readers.collect import collect_inputs
from whitenclip.readers.images import discover_images, image_error_reason, load_image
from whitenclip.readers.items import InputSkipWarning, SkipReport, detect_modality


def _png(path, size=(8, 6), colour=(200, 30, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 0).save(path)
    return path


# --------------------------------------------------------------------------- images


def test_discover_images_recursive_sorted_filtered(tmp_path, monkeypatch):
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.gif", "sub/notes.txt", ".hidden.png",
                ".cache/e.png", "z.tiff", "y.bmp", "x.jpeg"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p[len(str(tmp_path)) + 1:] for p in discover_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "x.jpeg", "y.bmp", "z.tiff", "sub/c.webp", "sub/deeper/d.gif"]
    # paths are joined onto the directory as given: a relative directory gives relative paths
    monkeypatch.chdir(tmp_path)
    assert discover_images("sub") == ["sub/c.webp", "sub/deeper/d.gif"]


def test_collect_image_directory_and_files(tmp_path):
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "imgs" / "b.png")
    extra = _png(tmp_path / "extra.png")
    inp = collect_inputs([tmp_path / "imgs", extra])
    assert inp.modality == "image"
    assert inp.items == [str(a), str(b), str(extra)]
    assert inp.skips.n_skipped == 0


def test_empty_image_directory_is_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files found"):
        collect_inputs([tmp_path / "empty"])


def test_missing_path_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such file"):
        collect_inputs([tmp_path / "nope.png"])
    with pytest.raises(InputError, match="no such file"):
        collect_inputs([tmp_path / "nope.txt"])


def test_load_image_applies_exif_orientation_and_rgb(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 40)
    arr = np.asarray(out)
    assert arr[2, 10, 2] > 200 and arr[2, 10, 0] < 60  # blue ends on top after rotating clockwise
    assert arr[-3, 10, 0] > 200


def test_load_image_reduced_jpeg_decode_keeps_requested_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 600), (10, 200, 30)).save(path)
    assert load_image(path).size == (800, 600)
    assert load_image(path, reduce_to=100).size == (200, 150)  # 1/4 scale; 1/8 would be < 100
    png = _png(tmp_path / "big.png", size=(800, 600))
    assert load_image(png, reduce_to=100).size == (800, 600)  # only JPEGs decode reduced


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_load_image_converts_modes_to_rgb(tmp_path, mode):
    path = tmp_path / ("m.png" if mode != "CMYK" else "m.jpg")
    Image.new(mode, (5, 4)).save(path)
    assert load_image(path).mode == "RGB"


def test_image_error_reasons(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(Exception) as info:
        load_image(bad)
    assert image_error_reason(info.value)[0] == "corrupt image"

    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:800])
    with pytest.raises(OSError) as info:
        load_image(cut)
    assert image_error_reason(info.value)[0] == "truncated image"

    with pytest.raises(FileNotFoundError) as info:
        load_image(tmp_path / "gone.png")
    assert image_error_reason(info.value) == ("missing file", "no such file or directory")


# --------------------------------------------------------------------------- captions


def test_captions_file_strips_and_skips_with_file_line(tmp_path):
    f = tmp_path / "caps.txt"
    f.write_bytes(b"\xef\xbb\xbfA dog runs.\n  A cat sleeps.  \r\n\n   \nbad \xff byte\nLast one\n")
    with pytest.warns(InputSkipWarning) as rec:
        inp = collect_inputs([f])
    assert inp.modality == "text"
    assert inp.items == ["A dog runs.", "A cat sleeps.", "Last one"]
    msgs = [str(w.message) for w in rec]
    assert msgs == [f"{f}:3: skipped (empty caption)", f"{f}:4: skipped (empty caption)",
                    f"{f}:5: skipped (non-UTF-8 line: byte 0xff at column 5)"]
    assert inp.skips.counts == {"empty caption": 2, "non-UTF-8 line": 1}
    assert inp.skips.summary() == "3 skipped: 2 empty caption, 1 non-UTF-8 line"
    assert inp.skips.as_dict() == {"n_skipped": 3, "by_reason": {"empty caption": 2, "non-UTF-8 line": 1}}


def test_strict_turns_skips_into_input_error(tmp_path):
    f = tmp_path / "caps.txt"
    f.write_bytes(b"ok\n\xc3\x28 broken\nfine\n")
    with pytest.raises(InputError, match=r"caps.txt:2: non-UTF-8 line.*strict"):
        collect_inputs([f], strict=True)
    g = tmp_path / "g.txt"
    g.write_text("ok\n\nfine\n")
    with pytest.raises(InputError, match=r"g.txt:2: empty caption"):
        collect_inputs([g], strict=True)


def test_nothing_usable_is_input_error(tmp_path):
    f = tmp_path / "blank.txt"
    f.write_bytes(b"\n  \n\xff\n")
    with pytest.warns(InputSkipWarning), pytest.raises(InputError, match=r"nothing usable.*3 skipped"):
        collect_inputs([f])
    e = tmp_path / "empty.txt"
    e.write_bytes(b"")
    with pytest.raises(InputError, match="nothing usable"):
        collect_inputs([e])


def test_csv_captions_by_column(tmp_path):
    f = tmp_path / "caps.csv"
    f.write_text('image,caption\n1.jpg,"A dog, running."\n2.jpg,\n3.jpg,A cat\n', encoding="utf-8")
    with pytest.warns(InputSkipWarning, match=r"caps.csv:3: skipped \(empty caption\)"):
        inp = collect_inputs([f])
    assert inp.items == ["A dog, running.", "A cat"]
    assert collect_inputs([f], column="image").items == ["1.jpg", "2.jpg", "3.jpg"]
    assert collect_inputs([f], column=0).items == ["1.jpg", "2.jpg", "3.jpg"]
    with pytest.raises(InputError, match="no column 'text'"):
        collect_inputs([f], column="text")
    # a .txt holding CSV (like flickr8k's all_captions.txt) is parsed as CSV when column is given
    t = tmp_path / "all.txt"
    t.write_text("image,caption\n1.jpg,A boat .\n")
    assert collect_inputs([t], column="caption").items == ["A boat ."]


def test_csv_without_caption_column_needs_column(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="pass --column"):
        collect_inputs([f])


def test_tsv_captions(tmp_path):
    f = tmp_path / "x.tsv"
    f.write_text("id\ttext\n1\tA bird, flying\n")
    assert collect_inputs([f]).items == ["A bird, flying"]


def test_stdin_captions_and_image_lists(tmp_path):
    with pytest.warns(InputSkipWarning, match=r"<stdin>:3: skipped \(empty caption\)"):
        inp = collect_inputs(["-"], stdin=io.BytesIO(b"one\ntwo\n\nthree"))
    assert inp.items == ["one", "two", "three"] and inp.modality == "text"
    a = _png(tmp_path / "a.png")
    inp = collect_inputs(["-"], modality="image", stdin=io.BytesIO(f"{a}\n\n".encode()))
    assert inp.items == [str(a)] and inp.modality == "image"


def test_detect_modality_and_override(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    assert detect_modality([d]) == "image"
    assert detect_modality(["x.PNG", "y.jpeg"]) == "image"
    assert detect_modality(["caps.txt"]) == "text"
    assert detect_modality(["-"]) == "text"
    with pytest.raises(InputError, match="mix images"):
        detect_modality(["a.png", "caps.txt"])
    with pytest.raises(InputError, match="unknown modality"):
        collect_inputs(["caps.txt"], modality="audio")
    # override: a file without a known extension is read as captions when asked
    listing = tmp_path / "list"
    listing.write_text("whatever\n")
    assert collect_inputs([listing], modality="text").items == ["whatever"]


def test_parse_captions_bytes_api():
    report = SkipReport()
    with pytest.warns(InputSkipWarning):
        caps = parse_captions(b"a\n\nb\n", "mem.txt", report=report)
    assert caps == ["a", "b"] and report.n_skipped == 1


# --------------------------------------------------------------------------- caption groups


def test_caption_groups_from_the_image_column(tmp_path):
    import warnings as _w

    from whitenclip.readers.captions import parse_caption_groups
    from whitenclip.readers.items import InputFormatWarning

    data = b"image,caption\na.jpg,one\na.jpg,two\nb.jpg,\nb.jpg,three\n,four\n"
    with pytest.warns(InputFormatWarning, match="grouping captions by its 'image' column"), \
            pytest.warns(InputSkipWarning, match=r"c.csv:4: skipped \(empty caption\)"):
        caps, groups = parse_caption_groups(data, "c.csv", group_column=True)
    assert caps == ["one", "two", "three", "four"] and groups == ["a.jpg", "a.jpg", "b.jpg", None]
    with _w.catch_warnings():
        _w.simplefilter("error", InputFormatWarning)  # an explicit column: no note
        _w.simplefilter("ignore", InputSkipWarning)
        assert parse_caption_groups(data, "c.csv", group_column="image")[1] == groups
        assert parse_caption_groups(data, "c.csv")[1] is None  # groups are asked for, never implied
        assert parse_caption_groups(b"file_name\tsentence\nx\ty\n", "c.tsv", group_column=0)[1] == ["x"]
        assert parse_caption_groups(b"caption,id\nx,1\n", "c.csv", group_column=True)[1] is None  # no image column
    with pytest.warns(InputFormatWarning):  # Flickr8k's captions.txt: a .txt holding an image,caption table
        assert parse_caption_groups(b"image,caption\na.jpg,x\nb.jpg,y\n", "captions.txt",
                                    group_column=True)[1] == ["a.jpg", "b.jpg"]
    with pytest.raises(InputError, match="no column 'clip'"):
        parse_caption_groups(data, "c.csv", group_column="clip")
    with pytest.raises(InputError, match="needs a CSV"):
        parse_caption_groups(b"a caption\nanother\n", "c.txt", group_column="image")
    (tmp_path / "c.csv").write_bytes(data)
    (tmp_path / "d.txt").write_text("plain one\nplain two\n")
    with pytest.warns(InputFormatWarning), pytest.warns(InputSkipWarning, match=r"c.csv:4: skipped"):
        got = collect_inputs([tmp_path / "c.csv", tmp_path / "d.txt"], group_column=True)
    assert got.groups == ["a.jpg", "a.jpg", "b.jpg", None, None, None] and len(got.items) == 6
    assert collect_inputs([tmp_path / "d.txt"], group_column=True).groups is None


def test_caption_groups_stay_aligned_with_captions_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from whitenclip.readers.captions import parse_caption_groups

    cell = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(cell, cell), max_size=20))
    def check(rows):
        buf = io.StringIO()
        import csv

        csv.writer(buf, lineterminator="\n").writerows([("img", "caption"), *rows])
        import warnings as _w

        with _w.catch_warnings():
            _w.simplefilter("ignore")
            caps, groups = parse_caption_groups(buf.getvalue().encode(), "p.csv", group_column=True)
        want = [(c.strip(), g.strip() or None) for g, c in rows if c.strip()]
        if len({g for _, g in want if g is not None}) <= 1:  # one value or none: the default column is not used
            assert groups is None and caps == [c for c, _ in want]
            return
        assert list(zip(caps, groups or [])) == want or (not want and not caps)

    check()


def test_an_image_over_the_decompression_bomb_limit_is_named(tmp_path, monkeypatch):
    """PIL's DecompressionBombWarning names no file: load_image warns naming it, the CLI shows only that."""
    from PIL import Image
    from typer.testing import CliRunner

    from whitenclip.cli import app
    from whitenclip.readers.images import load_image
    from whitenclip.readers.items import InputFormatWarning

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 = 1600: over the limit, under twice it
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "imgs" / "big.jpg")
    with pytest.warns(InputFormatWarning, match=r"big.jpg: 40x40 pixels, more than PIL's decompression-bomb limit "
                                                r"of 1000"), pytest.warns(Image.DecompressionBombWarning):
        assert load_image(tmp_path / "imgs" / "big.jpg").size == (40, 40)  # PIL's own warning too (library use)
    res = CliRunner().invoke(app, ["embed", str(tmp_path / "imgs"), "-o", str(tmp_path / "st"), "--model",
                                   "openclip:wc-tiny/none", "--num-workers", "0", "--decode", "cpu"])
    assert res.exit_code == 0, res.output
    assert "big.jpg: 40x40 pixels, more than PIL's decompression-bomb limit" in res.output
    assert "could be decompression bomb" not in res.output
