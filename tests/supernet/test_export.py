import numpy as np
import pytest
import torch

from supernet.elastic import OFAMobileNetV3
from supernet.export import export_onnx, export_tflite, load_subnet, parity, save_subnet
from supernet.space import DEFAULT_SPACE as S


@pytest.fixture(scope="module")
def subnet():
    torch.manual_seed(1)
    net = OFAMobileNetV3(width_mult=0.5, input_size=64)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.get_subnet(S.sample(np.random.default_rng(5))).eval()


def test_export_parity_on_real_aligned_faces(subnet, tmp_path, lfw_images):
    from hyperver.align import Aligner
    from hyperver.data import load_image
    from hyperver.descriptor.data import to_input

    aligner = Aligner()
    crops = [aligner.align_photo(load_image(lfw_images / p / f"{p}_0001.jpg")).crop
             for p in ("Zico", "Abel_Pacheco", "Amber_Tamblyn")]
    x = to_input(torch.from_numpy(np.stack(crops)), 64).numpy()
    onnx_path = export_onnx(subnet, tmp_path / "s.onnx", 64)
    tfl_path = export_tflite(subnet, tmp_path / "s.tflite")
    diffs = parity(subnet, onnx_path, tfl_path, x)
    assert diffs["onnx"] < 1e-4 and diffs["tflite"] < 1e-4, diffs


def test_subnet_safetensors_fp16_and_errors(subnet, tmp_path):
    path = save_subnet(subnet, tmp_path / "s.safetensors", dtype=torch.float16)
    loaded = load_subnet(path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(loaded(x), subnet(x), atol=2e-2)
    with pytest.raises(FileNotFoundError):
        load_subnet(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        load_subnet(tmp_path / "junk.safetensors")
