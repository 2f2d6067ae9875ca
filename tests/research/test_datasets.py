"""Dataset loaders: UNBC, BioVid and manifest layouts, and the errors a wrong layout gives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.research.datasets import (
    BIOVID_FPS,
    DatasetLayoutError,
    Sample,
    biovid_frame_times_s,
    detect_dataset_kind,
    load_biovid,
    load_dataset,
    load_manifest,
    load_unbc,
)
from painmon.core.util.labels import pspi_to_class

TINY = np.full((8, 8, 3), 128, dtype=np.uint8)


def make_unbc(root: Path, frames: dict[tuple[str, str, str], float]) -> Path:
    """UNBC-style tree; PSPI files written the way the archive writes them."""
    for number, ((subject, sequence, frame), pspi) in enumerate(frames.items()):
        image = root / "Images" / subject / sequence / f"{frame}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        picture = TINY.copy()
        picture[0, 0] = number % 256  # every frame its own content, as in the archive
        assert cv2.imwrite(str(image), picture)
        label = root / "Frame_Labels" / "PSPI" / subject / sequence / f"{frame}_facs.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"   {pspi:.7e}\n")
    return root


UNBC_FRAMES = {
    ("042-ll042", "ll042t1aaaff", "ll042t1aaaff001"): 0.0,
    ("042-ll042", "ll042t1aaaff", "ll042t1aaaff002"): 3.0,
    ("042-ll042", "ll042t2aaaff", "ll042t2aaaff001"): 8.0,
    ("043-jh043", "jh043t1aiaff", "jh043t1aiaff001"): 1.0,
}


def make_biovid(root: Path, clips: list[tuple[str, str, int]]) -> Path:
    for subject, level, index in clips:
        clip = root / "video" / subject / f"{subject}-{level}-{index:03d}.mp4"
        clip.parent.mkdir(parents=True, exist_ok=True)
        clip.write_bytes(b"not decoded by the loader: " + clip.name.encode())
    return root


def test_load_unbc_reads_pspi_files(tmp_path):
    root = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    samples = load_unbc(root)
    assert [s.subject for s in samples] == ["042-ll042"] * 3 + ["043-jh043"]
    assert [s.pspi for s in samples] == [0.0, 3.0, 8.0, 1.0]
    assert [s.label for s in samples] == [0, 2, 4, 1]
    assert all(s.source == "unbc" and s.frame_index is None for s in samples)
    assert samples[1].path == root / "Images/042-ll042/ll042t1aaaff/ll042t1aaaff002.png"


def test_unbc_image_without_label_names_the_image(tmp_path):
    root = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    (root / "Frame_Labels/PSPI/042-ll042/ll042t2aaaff/ll042t2aaaff001_facs.txt").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        load_unbc(root)
    message = str(err.value)
    assert "ll042t2aaaff001.png" in message
    assert "ll042t2aaaff001_facs.txt" in message
    assert "Frame_Labels/PSPI/<subject>/<sequence>/<frame>_facs.txt" in message


def test_unbc_bad_label_text_names_the_label_file(tmp_path):
    root = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    bad = root / "Frame_Labels/PSPI/043-jh043/jh043t1aiaff/jh043t1aiaff001_facs.txt"
    bad.write_text("n/a\n")
    with pytest.raises(DatasetLayoutError, match=r"jh043t1aiaff001_facs\.txt"):
        load_unbc(root)
    bad.write_text("   1.7000000e+01\n")  # PSPI tops out at 16
    with pytest.raises(DatasetLayoutError, match=r"0\.\.16"):
        load_unbc(root)


def test_unbc_wrong_layout_and_empty_fail(tmp_path):
    root = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    stray = root / "Images/042-ll042/loose.png"
    assert cv2.imwrite(str(stray), TINY)
    with pytest.raises(DatasetLayoutError, match=r"loose\.png"):
        load_unbc(root)
    (tmp_path / "empty/Images").mkdir(parents=True)
    (tmp_path / "empty/Frame_Labels/PSPI").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no samples"):
        load_unbc(tmp_path / "empty")
    with pytest.raises(DatasetLayoutError, match="Frame_Labels"):
        load_unbc(tmp_path / "nowhere")


def test_load_biovid_samples_frames_in_the_window(tmp_path):
    clips = [("071309_w_21", "BL1", 81), ("071309_w_21", "PA3", 2), ("082315_w_60", "PA4", 17)]
    root = make_biovid(tmp_path / "biovid", clips)
    samples = load_biovid(root)
    assert len(samples) == 3 * 4
    first_clip = samples[:4]
    assert [s.time_s for s in first_clip] == pytest.approx([2.0, 2.0 + 2.5 / 3, 2.0 + 5.0 / 3, 4.5])
    assert [s.frame_index for s in first_clip] == [50, 71, 92, 112]
    assert {s.path.name for s in first_clip} == {"071309_w_21-BL1-081.mp4"}
    assert [s.label for s in samples[::4]] == [0, 3, 4]
    assert all(s.source == "biovid" and s.pspi is None for s in samples)

    custom = load_biovid(root, frames_per_clip=2, window_s=(1.0, 3.0))
    assert [(s.time_s, s.frame_index) for s in custom[:2]] == [(1.0, 25), (3.0, 75)]
    single = load_biovid(root, frames_per_clip=1)
    assert single[0].time_s == pytest.approx(3.25)
    assert single[0].frame_index == round(3.25 * BIOVID_FPS)


def test_biovid_bad_file_name_is_named(tmp_path):
    root = make_biovid(tmp_path / "biovid", [("071309_w_21", "BL1", 1)])
    bad = root / "video/071309_w_21/071309_w_21-PA5-001.mp4"
    bad.write_bytes(b"")
    with pytest.raises(DatasetLayoutError) as err:
        load_biovid(root)
    assert str(bad) in str(err.value)
    assert "<BL1|PA1|PA2|PA3|PA4>" in str(err.value)
    bad.unlink()
    other = root / "video/071309_w_21/999999_m_30-PA1-001.mp4"  # subject differs from its folder
    other.write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match=r"999999_m_30-PA1-001\.mp4"):
        load_biovid(root)


def test_biovid_window_validation():
    assert biovid_frame_times_s(3, (0.0, 1.0)) == pytest.approx((0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match="frames_per_clip"):
        biovid_frame_times_s(0)
    with pytest.raises(ValueError, match="window_s"):
        biovid_frame_times_s(4, (3.0, 2.0))
    with pytest.raises(ValueError, match="empty"):
        biovid_frame_times_s(4, (2.0, 2.0))


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        assert cv2.imwrite(str(folder / name), TINY)


def test_manifest_relative_absolute_and_extra_columns(tmp_path):
    _write_images(tmp_path / "data/img", ["a.png", "b.png"])
    (tmp_path / "elsewhere").mkdir()
    absolute = tmp_path / "elsewhere/c.png"
    assert cv2.imwrite(str(absolute), TINY // 2)  # another person: other pixels
    manifest = tmp_path / "data/manifest.csv"
    manifest.write_text(
        "path,subject,pspi,label,au4,au43\n"
        "img/a.png,p01,0,0,0,0\n"
        "img/b.png,p01,5,3,3,1\n"
        f"{absolute},p02,12,4,5,1\n"
    )
    samples = load_manifest(manifest, allow_outside_root=True)
    assert [s.path for s in samples] == [
        tmp_path / "data/img/a.png",
        tmp_path / "data/img/b.png",
        absolute,
    ]
    assert [s.label for s in samples] == [0, 3, 4]
    assert [s.pspi for s in samples] == [0.0, 5.0, 12.0]

    label_only = tmp_path / "data/labels.csv"
    label_only.write_text("subject,path,label,frame_index\np03,img/a.png,2,\np03,img/b.png,1,7\n")
    samples = load_manifest(label_only)
    assert [(s.label, s.pspi, s.frame_index) for s in samples] == [(2, None, None), (1, None, 7)]


def test_manifest_missing_column_is_named(tmp_path):
    _write_images(tmp_path, ["a.png"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,pspi\na.png,0\n")
    with pytest.raises(DatasetLayoutError) as err:
        load_manifest(manifest)
    assert "subject" in str(err.value) and str(manifest) in str(err.value)
    manifest.write_text("path,subject,au4\na.png,p1,0\n")
    with pytest.raises(DatasetLayoutError, match="pspi or label"):
        load_manifest(manifest)


def test_a_crops_file_or_binary_file_is_not_a_manifest(tmp_path):
    crops = tmp_path / "crops.npz"
    crops.write_bytes(b"PK\x03\x04\x94\x00binary")
    with pytest.raises(DatasetLayoutError, match="crops file from `painmon crops`"):
        load_dataset(crops)
    binary = tmp_path / "m.csv"
    binary.write_bytes(b"path,subject\n\x94\xff\x00")
    with pytest.raises(DatasetLayoutError, match="not UTF-8 text") as err:
        load_dataset(binary)
    assert str(binary) in str(err.value) and "Expected" in str(err.value)


def test_manifest_pspi_label_disagreement_names_the_row(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject,pspi,label\na.png,p1,0,0\nb.png,p1,5,1\n")
    with pytest.raises(DatasetLayoutError) as err:
        load_manifest(manifest)
    message = str(err.value)
    assert "line 3" in message and "b.png" in message
    assert f"class {pspi_to_class(5)}" in message and "label is 1" in message


def test_manifest_missing_file_and_bad_values(tmp_path):
    _write_images(tmp_path, ["a.png"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject,label\na.png,p1,0\nghost.png,p1,1\n")
    with pytest.raises(DatasetLayoutError, match=r"ghost\.png"):
        load_manifest(manifest)
    manifest.write_text("path,subject,label\na.png,p1,7\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        load_manifest(manifest)
    manifest.write_text("path,subject,label\n")
    with pytest.raises(DatasetLayoutError, match="no samples"):
        load_manifest(manifest)


def test_load_dataset_auto_detects_each_layout(tmp_path):
    unbc = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    biovid = make_biovid(tmp_path / "biovid", [("s1", "PA2", 1)])
    _write_images(tmp_path / "m", ["a.png"])
    manifest = tmp_path / "m/manifest.csv"
    manifest.write_text("path,subject,pspi\na.png,p1,2\n")
    assert [detect_dataset_kind(p) for p in (unbc, biovid, manifest)] == [
        "unbc",
        "biovid",
        "manifest",
    ]
    assert len(load_dataset(unbc)) == 4
    assert len(load_dataset(biovid, frames_per_clip=3)) == 3
    assert load_dataset(manifest)[0].label == 2
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetLayoutError) as err:
        load_dataset(tmp_path / "other")
    assert "Images" in str(err.value) and "video" in str(err.value) and "CSV" in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_dataset(unbc, kind="affwild")


def test_sample_validation():
    sample = Sample("x.png", "p1", 2, 3.0, "unbc")
    assert isinstance(sample.path, Path)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        Sample("x.png", "p1", 5, None, "manifest")
    with pytest.raises(ValueError, match="means class 2"):
        Sample("x.png", "p1", 1, 3.0, "manifest")
    with pytest.raises(ValueError, match="subject"):
        Sample("x.png", " ", 0, None, "manifest")
    with pytest.raises(ValueError, match="frame_index"):
        Sample("x.mp4", "p1", 0, None, "biovid", frame_index=-1)
    with pytest.raises(ValueError, match="label must be an int"):
        Sample("x.png", "p1", True, None, "manifest")


# ---- manifests that would leak faces or read the wrong files ----------------------------


def _png(path: Path, value: int) -> Path:
    """A small PNG whose pixels (and so bytes) differ by ``value``: one image of one person."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), value, dtype=np.uint8))
    return path


def test_a_field_over_the_csv_limit_is_a_layout_error_naming_the_line(tmp_path):
    _png(tmp_path / "a.png", 1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject,label\na.png,p1,0\na.png,p1," + "x" * 200_000 + "\n")
    with pytest.raises(DatasetLayoutError, match="not readable CSV") as err:
        load_manifest(manifest)
    assert str(manifest) in str(err.value) and "line 3" in str(err.value)


def test_paths_leaving_the_manifest_folder_are_refused_unless_allowed(tmp_path):
    data = tmp_path / "data"
    inside = _png(data / "img" / "a.png", 1)
    outside = _png(tmp_path / "elsewhere" / "b.png", 2)
    (data / "link_out.png").symlink_to(outside)
    (data / "link_in.png").symlink_to(_png(data / "img" / "c.png", 3))
    manifest = data / "manifest.csv"
    for listed in ("../elsewhere/b.png", str(outside), "link_out.png", "img/../../elsewhere/b.png"):
        manifest.write_text(f"path,subject,label\nimg/a.png,p1,0\n{listed},p2,1\n")
        with pytest.raises(DatasetLayoutError, match="outside the manifest's folder") as err:
            load_manifest(manifest)
        assert "line 3" in str(err.value) and "--allow-outside-root" in str(err.value)
        samples = load_dataset(manifest, allow_outside_root=True)
        assert [s.subject for s in samples] == ["p1", "p2"]
    # Inside stays inside: an absolute path into the folder and a link within it.
    manifest.write_text(f"path,subject,label\n{inside},p1,0\nlink_in.png,p1,2\n")
    assert len(load_manifest(manifest)) == 2


def test_duplicate_rows_and_one_file_under_two_subjects_are_refused(tmp_path):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "clip.png", 2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject,label\na.png,p1,0\n./a.png,p1,0\n")
    with pytest.raises(DatasetLayoutError, match=r"lines 2 and 3 both list \./a\.png"):
        load_manifest(manifest)
    manifest.write_text("path,subject,label,frame_index\nclip.png,p1,0,4\nclip.png,p1,1,4\n")
    with pytest.raises(DatasetLayoutError, match="frame 4: remove the duplicate row"):
        load_manifest(manifest)
    manifest.write_text("path,subject,label,frame_index\nclip.png,p1,0,4\nclip.png,p2,1,5\n")
    with pytest.raises(DatasetLayoutError, match="subject 'p1' \\(line 2\\) and subject 'p2'"):
        load_manifest(manifest)
    manifest.write_text("path,subject,label,frame_index\nclip.png,p1,0,4\nclip.png,p1,1,5\n")
    assert len(load_manifest(manifest)) == 2  # two frames of one person's video


def test_the_same_image_bytes_under_two_subjects_are_refused(tmp_path, monkeypatch):
    from painmon.core.research import datasets

    first = _png(tmp_path / "alice" / "0001.png", 1)
    copy = tmp_path / "bob" / "0001.png"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    _png(tmp_path / "bob" / "0002.png", 3)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,subject,label\nalice/0001.png,alice,0\nbob/0001.png,bob,0\nbob/0002.png,bob,1\n"
    )
    with pytest.raises(DatasetLayoutError) as err:
        load_manifest(manifest)
    message = str(err.value)
    for name in ("'alice'", "'bob'", str(first), str(copy), "same image"):
        assert name in message, name
    # The same bytes twice within one person is no leak (UNBC repeats still frames).
    manifest.write_text("path,subject,label\nalice/0001.png,bob,0\nbob/0001.png,bob,0\n")
    assert len(load_manifest(manifest)) == 2

    # Cheap: files of a size no other subject's file has are never hashed.
    hashed = []
    monkeypatch.setattr(datasets, "sha256_file", lambda p: hashed.append(p) or str(p))
    _png(tmp_path / "carol" / "big.png", 0)
    (tmp_path / "carol" / "big.png").write_bytes(b"x" * 5000)
    manifest.write_text("path,subject,label\nalice/0001.png,alice,0\ncarol/big.png,carol,1\n")
    assert len(load_manifest(manifest)) == 2 and hashed == []


def test_load_unbc_refuses_one_image_under_two_subjects(tmp_path):
    root = make_unbc(tmp_path / "unbc", UNBC_FRAMES)
    copy = root / "Images" / "043-jh043" / "jh043t1aiaff" / "jh043t1aiaff002.png"
    copy.write_bytes((root / "Images" / "042-ll042" / "ll042t1aaaff" / "ll042t1aaaff001.png")
                     .read_bytes())  # fmt: skip
    label = root / "Frame_Labels" / "PSPI" / "043-jh043" / "jh043t1aiaff"
    (label / "jh043t1aiaff002_facs.txt").write_text("   0.0000000e+00\n")
    with pytest.raises(DatasetLayoutError, match=r"042-ll042.*same image"):
        load_unbc(root)


def test_load_biovid_refuses_one_clip_under_two_subjects(tmp_path):
    root = make_biovid(tmp_path / "biovid", [("071309_w_21", "BL1", 1), ("080209_w_26", "PA1", 2)])
    first = root / "video" / "071309_w_21" / "071309_w_21-BL1-001.mp4"
    second = root / "video" / "080209_w_26" / "080209_w_26-PA1-002.mp4"
    second.write_bytes(first.read_bytes())
    with pytest.raises(DatasetLayoutError, match="same image"):
        load_biovid(root)


# --- one person, two spellings (an Excel-edited manifest) ------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("s000", "S000"), ("Jos\u00e9", "Jose\u0301"), ("p\uff11", "P1")],  # case, NFC/NFD, width
)
def test_a_subject_spelt_two_ways_in_a_manifest_is_refused(tmp_path, first, second):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    _png(tmp_path / "c.png", 3)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"path,subject,label\na.png,{first},0\nb.png,other,1\nc.png,{second},2\n", encoding="utf-8"
    )
    with pytest.raises(DatasetLayoutError, match="differ only in case") as err:
        load_manifest(manifest)
    message = str(err.value)
    assert repr(first) in message and repr(second) in message


def test_a_unbc_or_biovid_subject_spelt_two_ways_is_refused(tmp_path):
    frames = {**UNBC_FRAMES, ("042-LL042", "ll042t3aaaff", "ll042t3aaaff001"): 2.0}
    root = make_unbc(tmp_path / "unbc", frames)
    with pytest.raises(DatasetLayoutError, match="'042-LL042' and '042-ll042' differ only"):
        load_unbc(root)
    root = make_biovid(tmp_path / "biovid", [("071309_w_21", "BL1", 1), ("071309_W_21", "PA1", 2)])
    with pytest.raises(DatasetLayoutError, match="'071309_W_21' and '071309_w_21' differ only"):
        load_biovid(root)


def test_a_crops_file_with_a_subject_spelt_two_ways_is_refused(tmp_path):
    from painmon.core.research.crops import CropSet

    images = np.zeros((4, 16, 16, 3), np.uint8)
    crops = CropSet(images, np.array([0, 1, 2, 3]), np.array(["s000", "s001", "S000", "s001"]),
                    tuple(f"{i}.png" for i in range(4)), (None,) * 4)  # fmt: skip
    path = crops.save_npz(tmp_path / "c.npz", dataset_sha256="ab" * 32)
    with pytest.raises(DatasetLayoutError, match="'S000' and 's000' differ only in case"):
        CropSet.load_npz(path)
