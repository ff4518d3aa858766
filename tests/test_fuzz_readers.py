"""Fuzzing of the readers with hypothesis (issue 8): CSV tables (2D, 3D and ChestX-ray14's Data_Entry),
MSD ``dataset.json``, NIfTI headers and PNG files. Whatever the bytes, a reader either loads the input or
reports one-line problems / raises the one-line :class:`UserError`; never another exception (a traceback).
For images the stronger rule holds too: a file that passes the check is one the training pipeline loads.

Bounded in the suite (deterministic examples, a few seconds per reader); a longer search:
``SELFMEDMAE_FUZZ_EXAMPLES=2000 SELFMEDMAE_FUZZ_RANDOM=1 pytest tests/test_fuzz_readers.py``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from selfmedmae.config import load_config  # noqa: E402
from selfmedmae.data import build  # noqa: E402
from selfmedmae.errors import UserError  # noqa: E402



def check(cfg):
    """What ``check-data`` reports for ``cfg``: its data's check at the config's stage."""
    return build(cfg.data).check(str(cfg.stage))


EXAMPLES = int(os.environ.get("SELFMEDMAE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("SELFMEDMAE_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
TRIED: dict[str, int] = {}


def one_line_or_user_error(fn, *args, **kwargs):
    """Run a reader; its problems must be one line each; only UserError may escape (one line too)."""
    try:
        result = fn(*args, **kwargs)
    except UserError as exc:
        assert "\n" not in str(exc).strip() or str(exc).startswith("data check failed:"), str(exc)
        return None
    problems = getattr(result, "problems", None) or []
    for p in problems:
        assert isinstance(p, str) and p and "\n" not in p, p
    return result


def _tiny_volume(path: Path, value_seed: int = 0, label: bool = False) -> Path:
    rng = np.random.default_rng(value_seed)
    data = rng.integers(0, 3, (6, 6, 5)).astype(np.uint8) if label else rng.random((6, 6, 5), np.float32) + 0.1
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    vols = tmp / "vols"
    vols.mkdir()
    for i in range(2):
        _tiny_volume(vols / f"img{i}.nii.gz", i)
        _tiny_volume(vols / f"lab{i}.nii.gz", i, label=True)
    pngs = tmp / "pngs"
    pngs.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(pngs / f"x{i}.png")
    return tmp


# ------------------------------------------------------------------------------------------------ CSV
CELLS = st.one_of(st.sampled_from(["", "0", "1", "-1", "2", "yes", "nan", "1e400", " 1 ", "No Finding",
                                   "Effusion|Mass", "Effusion||", "x0.png", "pngs/x0.png", "pngs/x1.png",
                                   "vols/img0.nii.gz", "vols/lab0.nii.gz", "../../etc/passwd", "/abs/x.png",
                                   "\x00", "\ufeffimage", "é", "a,b", '"q"', "\r\n"]),
                  st.text(max_size=12))
HEADERS = st.lists(st.sampled_from(["image", "label", "id", "A", "B", "patient", "Image Index",
                                    "Finding Labels", "Patient ID", "", "image"]) | st.text(max_size=6),
                   min_size=0, max_size=5)


def _table(header, rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


CSV_BYTES = st.one_of(
    st.builds(_table, HEADERS, st.lists(st.lists(CELLS, max_size=6), max_size=6)),
    st.binary(max_size=200),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"image,A\n", b"image,A\npngs/x0.png,1\n\xff\xfe,0\n",
                     b'image,A\n"pngs/x0.png,1\n', b"image\x00,A\npngs/x0.png,1\n"]),
)


def _fresh_csv(files: Path, name: str, content: bytes) -> Path:
    path = files / name
    path.write_bytes(content)
    return path


@FUZZ
@given(content=CSV_BYTES)
def test_fuzz_csv_2d(files, content):
    TRIED["csv 2D"] = TRIED.get("csv 2D", 0) + 1
    _fresh_csv(files, "table2d.csv", content)
    cfg = load_config(None, ["data.format=csv", "data.spatial_dims=2", f"data.root={files}", "data.csv=table2d.csv",
                             "data.num_workers=0", "data.group_column=patient"])
    one_line_or_user_error(check, cfg)


@FUZZ
@given(content=CSV_BYTES)
def test_fuzz_csv_3d(files, content):
    TRIED["csv 3D"] = TRIED.get("csv 3D", 0) + 1
    _fresh_csv(files, "table3d.csv", content)
    cfg = load_config(None, ["data.format=csv", f"data.root={files}", "data.csv=table3d.csv", "data.num_workers=0",
                             "data.labels=[bg,a,b]", "data.spacing=null", "data.roi_size=[4,4,4]"])
    one_line_or_user_error(check, cfg)


@FUZZ
@given(content=CSV_BYTES)
def test_fuzz_cxr14_data_entry(files, content):
    TRIED["cxr14 Data_Entry csv"] = TRIED.get("cxr14 Data_Entry csv", 0) + 1
    root = files / "cxr"
    if not root.is_dir():
        (root / "images").mkdir(parents=True)
        for i in range(2):
            shutil.copy(files / "pngs" / f"x{i}.png", root / "images" / f"0000000{i}_000.png")
    _fresh_csv(root, "Data_Entry_2017.csv", content)
    cfg = load_config(None, ["data.format=cxr14", "data.spatial_dims=2", f"data.root={root}", "data.num_workers=0"])
    one_line_or_user_error(check, cfg)


# ------------------------------------------------------------------------------------------ dataset.json
PATHS = st.sampled_from(["./vols/img0.nii.gz", "./vols/img1.nii.gz", "./vols/lab0.nii.gz", "./vols/lab1.nii.gz",
                         "vols/missing.nii.gz", "", "/", "../x", "./pngs/x0.png"])
ITEM = st.one_of(st.fixed_dictionaries({"image": PATHS, "label": PATHS}), st.fixed_dictionaries({"image": PATHS}),
                 PATHS, st.integers(), st.none(), st.dictionaries(st.text(max_size=5), PATHS, max_size=2))
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=8)
MSD = st.fixed_dictionaries({}, optional={
    "training": st.lists(ITEM, max_size=4) | JSONISH,
    "test": st.lists(PATHS | ITEM, max_size=3) | JSONISH,
    "labels": st.one_of(st.just({"0": "background", "1": "a", "2": "b"}),
                        st.dictionaries(st.sampled_from(["0", "1", "2", "x", "-1", "01"]), st.text(max_size=5) | JSONISH,
                                        max_size=4), JSONISH),
    "modality": st.one_of(st.just({"0": "MRI"}), st.just({"0": "a", "1": "b"}), JSONISH),
    "numTraining": JSONISH, "name": JSONISH,
})


def _json_bytes(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@FUZZ
@given(content=st.one_of(st.builds(_json_bytes, MSD), st.builds(_json_bytes, JSONISH), st.binary(max_size=120),
                         st.sampled_from([b"", b"{", b'{"training": [}', b"\xff\xfe{}", b"[]", b"null"])))
def test_fuzz_dataset_json(files, content):
    TRIED["dataset.json"] = TRIED.get("dataset.json", 0) + 1
    (files / "dataset.json").write_bytes(content)
    cfg = load_config(None, ["data.format=msd", f"data.root={files}", "data.num_workers=0", "data.spacing=null",
                             "data.roi_size=[4,4,4]"])
    one_line_or_user_error(check, cfg)


# ------------------------------------------------------------------------------------------ NIfTI headers
def _valid_nifti(kind: int) -> bytes:
    data = np.arange(4 * 5 * 3 * (2 if kind == 1 else 1), dtype=np.float32).reshape(
        (4, 5, 3, 2) if kind == 1 else (4, 5, 3)) + 1.0
    img = nib.Nifti1Image(data if kind != 2 else data.astype(np.int16), np.diag([1.0, 1.5, 2.0, 1.0]))
    return img.to_bytes()


MUTATIONS = st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=8)
FLOAT_FIELDS = {"pixdim": (76, 8), "vox_offset": (108, 1), "scl_slope": (112, 1), "scl_inter": (116, 1),
                "quatern_b": (256, 6), "srow_x": (280, 12)}
SPECIAL = st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e30, -1e-30, 3.0, 1e9])


@FUZZ
@given(kind=st.integers(0, 2), bytes_=MUTATIONS,
       floats=st.lists(st.tuples(st.sampled_from(sorted(FLOAT_FIELDS)), st.integers(0, 11), SPECIAL), max_size=3),
       dims=st.lists(st.tuples(st.integers(0, 7), st.integers(-3, 70000)), max_size=2),
       cut=st.none() | st.integers(0, 600))
def test_fuzz_nifti_headers(files, kind, bytes_, floats, dims, cut):
    from selfmedmae.data.check import check_case
    from selfmedmae.data.inputs import check_volume

    TRIED["NIfTI header"] = TRIED.get("NIfTI header", 0) + 1
    raw = bytearray(_valid_nifti(kind))
    for offset, value in bytes_:
        raw[offset] = value
    for name, index, value in floats:
        start, count = FLOAT_FIELDS[name]
        raw[start + 4 * (index % count):start + 4 * (index % count) + 4] = np.float32(value).tobytes()
    for index, value in dims:  # dim[0..7]: int16 at offset 40
        raw[40 + 2 * index:42 + 2 * index] = np.int16(np.clip(value, -32768, 32767)).tobytes()
    if cut is not None:
        raw = raw[:cut]
    path = files / "fuzzed.nii"
    path.write_bytes(bytes(raw))
    cfg = load_config(None, ["data.spacing=[1.5,1.5,2.0]", "data.roi_size=[4,4,4]"])
    facts = check_case({"image": str(path), "label": str(files / "vols" / "lab0.nii.gz")}, cfg.data, 3)
    for p in facts.problems + facts.warnings:
        assert "\n" not in p, p
    one_line_or_user_error(check_volume, path, 1)


# ------------------------------------------------------------------------------------------------ PNG
def _valid_png(mode: str, size: int) -> bytes:
    rng = np.random.default_rng(size)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 4096, (size, size)).astype(np.uint16))
    elif mode in ("RGB", "RGBA"):
        img = Image.fromarray(rng.integers(0, 255, (size, size, len(mode))).astype(np.uint8), mode)
    else:
        img = Image.fromarray(rng.integers(0, 255, (size, size)).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@FUZZ
@given(mode=st.sampled_from(["L", "I;16", "RGB", "RGBA", "P", "LA", "1"]), size=st.integers(1, 24),
       mutations=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.integers(0, 300))
def test_fuzz_png(files, mode, size, mutations, cut):
    from selfmedmae.data.check_2d import inspect_image
    from selfmedmae.data.transforms_2d import preprocess
    from selfmedmae.data.inputs import check_image

    TRIED["PNG"] = TRIED.get("PNG", 0) + 1
    raw = bytearray(_valid_png(mode, size))
    for offset, value in mutations:
        if offset < len(raw):
            raw[offset] = value
    if cut is not None:
        raw = raw[:cut]
    path = files / "fuzzed.png"
    path.write_bytes(bytes(raw))
    desc, problem = inspect_image(str(path))
    assert (desc is None) != (problem is None) and (problem is None or "\n" not in problem)
    passed = one_line_or_user_error(check_image, path) is None and problem is None
    if passed:  # what the check lets through, the training pipeline loads
        out = preprocess(path, 16, hist_eq=True)
        assert out.shape == (16, 16) and out.dtype == np.uint8


def test_fuzz_counts_are_reported(capsys):
    """Runs last in this file: prints how many inputs each reader was given (for the record)."""
    with capsys.disabled():
        print("\nfuzzed inputs per reader:", ", ".join(f"{k} {v}" for k, v in TRIED.items()))
    assert all(v >= 1 for v in TRIED.values())


def test_a_data_entry_csv_that_is_not_utf8_is_one_line(files):
    """The input fuzzing found (a lone 0x80 byte): a UnicodeDecodeError traceback before the fix."""
    root = files / "cxr_bin"
    (root / "images").mkdir(parents=True)
    shutil.copy(files / "pngs" / "x0.png", root / "images" / "00000000_000.png")
    (root / "Data_Entry_2017.csv").write_bytes(b"\x80")
    cfg = load_config(None, ["data.format=cxr14", "data.spatial_dims=2", f"data.root={root}", "data.num_workers=0"])
    report = check(cfg)
    assert any(p.endswith("Data_Entry_2017.csv: not a UTF-8 text CSV (byte 0: invalid start byte)")
               for p in report.problems), report.problems


# --- found by a longer random search (300 examples per reader, SELFMEDMAE_FUZZ_RANDOM=1) -----------------
def test_a_csv_header_cell_with_a_line_break_gives_one_line_problems(files):
    """Quoted header cell "0<LF>0": the missing-column message quoted the header and spanned two lines."""
    from selfmedmae.data import csv_2d

    path = _fresh_csv(files, "table2d.csv", b'"0\n0"\r\n0\r\n')
    cfg = load_config(None, ["data.format=csv", "data.spatial_dims=2", f"data.root={path.parent}",
                             f"data.csv={path.name}", "data.num_workers=0"])
    problems = csv_2d.scan(cfg.data).report.problems
    assert any("no column 'image' (columns: 0\\n0)" in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_a_data_entry_cell_with_a_carriage_return_gives_one_line_problems(files):
    """An image name "0<CR>0" in Data_Entry_2017.csv: quoted raw, it broke its problem over two lines."""
    root = files / "cxr_cr"
    (root / "images").mkdir(parents=True)
    shutil.copy(files / "pngs" / "x0.png", root / "images" / "00000000_000.png")
    (root / "Data_Entry_2017.csv").write_bytes(_table([], [["0\r0", "", "", ""]]))
    cfg = load_config(None, ["data.format=cxr14", "data.spatial_dims=2", f"data.root={root}", "data.num_workers=0"])
    problems = check(cfg).problems
    assert any("line 2: 0\\" in p and "0: empty label" in p for p in problems), problems  # the break, escaped
    assert all("\n" not in p and "\r" not in p for p in problems)


@pytest.mark.parametrize("affine_fix", ["degenerate", "nan"])
def test_a_header_whose_affine_has_no_orientation_is_a_problem_not_a_traceback(files, affine_fix):
    """A mutated sform made nibabel's orientation code raise ValueError inside check-data."""
    from selfmedmae.data.check import check_case

    img = nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    raw = bytearray(img.header.binaryblock + b"\0" * 4 + np.asanyarray(img.dataobj).tobytes())
    srow = np.eye(4, dtype=np.float32)[:3]  # srow_x, srow_y, srow_z: 12 float32 from byte 280
    if affine_fix == "degenerate":
        srow[:, 1] = 0.0  # the second voxel axis points nowhere: no orientation
    else:
        srow[0, 0] = np.nan
    raw[280:328] = srow.tobytes()
    raw[252:256] = np.array([0, 1], dtype=np.int16).tobytes()  # qform_code 0, sform_code 1: the sform rules
    path = files / f"no_orientation_{affine_fix}.nii"
    path.write_bytes(bytes(raw))
    cfg = load_config(None, ["data.spacing=[1.5,1.5,2.0]", "data.roi_size=[4,4,4]"])
    facts = check_case({"image": str(path)}, cfg.data, 3)
    assert any("affine" in p for p in facts.problems), facts.problems
