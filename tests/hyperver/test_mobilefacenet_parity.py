"""The PyTorch MobileFaceNet reproduces the pretrained TFLite MobileFaceNet on real aligned LFW faces."""
import numpy as np
import pytest
import torch

from supernet.models import MobileFaceNet, load_tensor_dict, load_tflite_weights, read_tflite_tensors

# Ten people, two photos each: 20 faces, 10 genuine pairs.
PEOPLE = ["Aaron_Peirsol", "Abdoulaye_Wade", "Abdullah_Gul", "Abel_Pacheco", "Adam_Sandler", "Adrien_Brody",
          "Ahmed_Chalabi", "Ai_Sugiyama", "Al_Gore", "Al_Sharpton"]


@pytest.fixture(scope="module")
def model_path():
    from hyperver.model_files import require_model_file

    return require_model_file("mobilefacenet")


@pytest.fixture(scope="module")
def faces(lfw_images) -> np.ndarray:
    """(20, 112, 112, 3) NHWC float input, RGB normalised as (x - 127.5) / 128 like the TFLite model expects."""
    from hyperver.align import Aligner
    from hyperver.data import load_image

    aligner = Aligner()
    crops = []
    for person in PEOPLE:
        for i in (1, 2):
            face = aligner.align_dataset_image(load_image(lfw_images / person / f"{person}_{i:04d}.jpg"))
            assert not face.fallback, f"{person}_{i:04d}: no face found"
            crops.append(face.crop)
    return (np.stack(crops).astype(np.float32) - 127.5) / 128.0


@pytest.fixture(scope="module")
def tflite_embeddings(model_path, faces) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = int(inp["shape"][0])  # fixed at 2: a constant-shape RESHAPE refuses other batch sizes
    outs = []
    for i in range(0, len(faces), batch):
        interp.set_tensor(inp["index"], faces[i:i + batch])
        interp.invoke()
        outs.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(outs)


def torch_embeddings(model: MobileFaceNet, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous()).numpy()


def test_parity_with_tflite_on_real_faces(model_path, faces, tflite_embeddings):
    tensors = read_tflite_tensors(model_path)
    model = load_tensor_dict(MobileFaceNet("sirius"), tensors)
    emb = torch_embeddings(model, faces)
    assert emb.shape == tflite_embeddings.shape == (20, 192)
    scale = float(np.abs(tflite_embeddings).max())
    diff = float(np.abs(emb - tflite_embeddings).max())
    assert diff <= 1e-4 * scale, f"max |diff| {diff:.3g} vs output scale {scale:.3g}"
    # PyTorch's symmetric padding (same_pad=False) on the same weights is far off: the check has teeth.
    sym = load_tensor_dict(MobileFaceNet("sirius", same_pad=False), tensors)
    assert float(np.abs(torch_embeddings(sym, faces) - tflite_embeddings).max()) > 0.1 * scale


def test_same_person_is_more_similar_than_different_people(model_path, faces):
    emb = torch_embeddings(load_tflite_weights(MobileFaceNet("sirius"), model_path), faces)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    person = np.repeat(np.arange(len(PEOPLE)), 2)
    same = person[:, None] == person[None, :]
    genuine = sim[same & ~np.eye(len(person), dtype=bool)]
    impostor = sim[~same]
    assert genuine.min() > impostor.max(), (genuine.min(), impostor.max())
    assert genuine.mean() - impostor.mean() > 0.4


def test_seeded_supernet_largest_subnet_is_the_tflite_model(faces, tflite_embeddings):
    """Step 0 of SuperNet v2: the elastic MobileFaceNet seeded by name equals the TFLite file on real faces,
    fed this project's input convention, after its folded BN is unfolded on those faces."""
    from hyperver.descriptor.seed import seed_supernet
    from supernet.spaces.mobilefacenet import ElasticMobileFaceNet, MobileFaceNetSpace

    x = torch.from_numpy(faces * 128.0 / 127.5).permute(0, 3, 1, 2).contiguous()   # (x - 127.5) / 127.5
    scale = float(np.abs(tflite_embeddings).max())
    for kernels in [(3,), (3, 5)]:
        net = ElasticMobileFaceNet(MobileFaceNetSpace(kernels=kernels), normalize=False)
        seed_supernet(net, "mobilefacenet", [x], n_images=len(x))
        with torch.no_grad():
            emb = net.eval()(x).numpy()
            sub = net.get_subnet(net.space.largest()).eval()(x).numpy()
        assert float(np.abs(emb - tflite_embeddings).max()) <= 1e-4 * scale
        assert float(np.abs(sub - tflite_embeddings).max()) <= 1e-4 * scale
