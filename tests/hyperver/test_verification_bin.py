import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from hyperver.data import read_verification_bin
from hyperver.errors import DatasetError


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (112, 112), (value, value, value)).save(buf, format="JPEG")
    return buf.getvalue()


def test_reads_insightface_style_bin(tmp_path):
    images = [_jpeg(v) for v in (10, 20, 30, 40)]
    path = tmp_path / "mini.bin"
    with open(path, "wb") as f:
        pickle.dump((images, [True, False]), f, protocol=2)  # insightface's files use protocol 2
    vb = read_verification_bin(path)
    assert len(vb) == 2 and vb.issame.tolist() == [True, False]
    a, b, same = vb.pair(0)
    assert a.shape == (112, 112, 3) and same
    assert vb.folds(2).tolist() == [1, 2]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_malicious_pickles(tmp_path):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Evil()], [True])))
    with pytest.raises(DatasetError, match="refusing to load global"):
        read_verification_bin(path)
    arr = tmp_path / "numpy.bin"
    arr.write_bytes(pickle.dumps(([_jpeg(1), _jpeg(2)], np.array([True]))))
    with pytest.raises(DatasetError, match="refusing"):
        read_verification_bin(arr)


def test_structure_errors(tmp_path):
    p = tmp_path / "bad.bin"
    p.write_bytes(pickle.dumps(([_jpeg(1)], [True])))
    with pytest.raises(DatasetError, match="need 2 per pair"):
        read_verification_bin(p)
    p.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read"):
        read_verification_bin(p)
    with pytest.raises(DatasetError, match="not found"):
        read_verification_bin(tmp_path / "none.bin")
