import os
import warnings

import cv2
import numpy as np
import pytest

from lesionprop.data.layout import SliceReadError, decode_png, encode_hu, write_slice
from lesionprop.data.slices import SliceReader

SERIES = "000001_01_01"


def hu_image(i: int, shape=(6, 8)) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return (10 * i * i + xx + 10 * yy).astype(np.int16)


@pytest.fixture
def series_root(tmp_path):
    for i in range(1, 12):
        write_slice(tmp_path, SERIES, i, hu_image(i))
    return tmp_path


def test_png_round_trip_hu(tmp_path):
    hu = np.array([[-32768, -1024, -1], [0, 1, 32767]], np.int16)
    p = write_slice(tmp_path, SERIES, 7, hu)
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 1] == 32768 - 1024
    out = decode_png(p)
    assert out.dtype == np.int16 and np.array_equal(out, hu)
    assert np.array_equal(encode_hu(np.array([-40000, 40000])), [0, 65535])


def test_read_listing_and_cache(series_root):
    r = SliceReader(series_root)
    assert r.available_slices(SERIES) == list(range(1, 12))
    assert r.available_slices("999999_01_01") == []
    a = r.read_hu(SERIES, 4)
    assert np.array_equal(a, hu_image(4)) and not a.flags.writeable
    r.read_hu(SERIES, 4)
    assert r.decoded == 1 and r.cached_bytes == a.nbytes


def test_lru_cache_is_bounded(series_root):
    nbytes = hu_image(1).nbytes
    r = SliceReader(series_root, max_cache_bytes=3 * nbytes)
    for i in range(1, 8):
        r.read_hu(SERIES, i)
    assert r.cached_bytes == 3 * nbytes and r.decoded == 7
    r.read_hu(SERIES, 7)            # most recent: cached
    assert r.decoded == 7
    r.read_hu(SERIES, 1)            # evicted: decoded again
    assert r.decoded == 8
    r2 = SliceReader(series_root, cache=False)
    r2.read_hu(SERIES, 2)
    r2.read_hu(SERIES, 2)
    assert r2.decoded == 2 and r2.cached_bytes == 0


def test_missing_neighbour_falls_back_toward_centre(series_root):
    os.remove(series_root / "Images_png" / SERIES / "005.png")
    os.remove(series_root / "Images_png" / SERIES / "004.png")
    r = SliceReader(series_root)
    with pytest.warns(UserWarning, match="slice 4 is missing, using slice 6"):
        assert r.resolve(SERIES, 4, toward=6) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # one warning per series only
        assert r.resolve(SERIES, 5, toward=1) == 3
        assert r.resolve(SERIES, 14, toward=6) == 11
        assert np.array_equal(r.read_hu(SERIES, 13, toward=6), hu_image(11))
    assert r.fallbacks == 4


def test_missing_centre_or_nothing_between_raises_naming_path(series_root):
    os.remove(series_root / "Images_png" / SERIES / "005.png")
    os.remove(series_root / "Images_png" / SERIES / "004.png")
    r = SliceReader(series_root)
    path = str(series_root / "Images_png" / SERIES / "005.png")
    with pytest.raises(SliceReadError, match="005.png"):
        r.read_hu(SERIES, 5)
    with pytest.raises(SliceReadError) as exc:
        r.read_hu(SERIES, 5, toward=4)
    assert path in str(exc.value)
    with pytest.raises(SliceReadError, match="series folder missing"):
        r.read_hu("000002_01_01", 3)
    with pytest.raises(FileNotFoundError, match="Images_png"):
        SliceReader(series_root / "nope")


def test_corrupt_and_8bit_png_errors_name_the_file(series_root):
    folder = series_root / "Images_png" / SERIES
    (folder / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cv2.imwrite(str(folder / "002.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(folder / "001.png"), np.zeros((6, 8, 3), np.uint16))
    r = SliceReader(series_root)
    with pytest.raises(SliceReadError, match=r"corrupt.*003\.png"):
        r.read_hu(SERIES, 3)
    with pytest.raises(SliceReadError, match=r"16-bit.*uint8.*002\.png"):
        r.read_hu(SERIES, 2)
    with pytest.raises(SliceReadError, match=r"single-channel.*001\.png"):
        r.read_hu(SERIES, 1)


def test_disk_cache_memmap_reused_and_invalidated(series_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    r = SliceReader(series_root, cache_dir=cache)
    a = r.read_hu(SERIES, 6)
    assert np.array_equal(a, hu_image(6)) and r.decoded == 11          # the whole series, once
    assert isinstance(a.base, np.memmap) or isinstance(a, np.memmap)
    r2 = SliceReader(series_root, cache_dir=cache)
    for i in range(1, 12):
        assert np.array_equal(r2.read_hu(SERIES, i), hu_image(i))
    assert r2.decoded == 0
    # a rewritten slice changes the folder's signature: re-cached, stale files removed
    write_slice(series_root, SERIES, 6, hu_image(6) + 1)
    os.utime(series_root / "Images_png" / SERIES / "006.png", ns=(1, 1))
    r3 = SliceReader(series_root, cache_dir=cache)
    assert np.array_equal(r3.read_hu(SERIES, 6), hu_image(6) + 1) and r3.decoded == 11
    assert len(list(cache.glob(f"{SERIES}.*.hu.npy"))) == 1


def test_reader_pickles_without_its_cache(series_root):
    import pickle

    r = SliceReader(series_root)
    r.read_hu(SERIES, 3)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.cached_bytes == 0 and np.array_equal(r2.read_hu(SERIES, 3), hu_image(3))
