"""The starter face branch: Keras mini-Xception → safetensors → torch, the aligned crop, the extractor.

The torch model is checked against an independent forward pass in plain numpy (float64) that walks
the HDF5 file's own layer configuration and inbound nodes with Keras semantics, so neither the
converter's architecture description nor its weight layouts are trusted by the check.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from models.constants import CLASS_NAMES
from models.starter.face import FER_CLASSES, FerFaceExtractor, fer_to_six
from models.starter.face_crop import CROP_SIZE, aligned_face_crop
from models.starter.fer_convert import convert_fer_hdf5, read_keras_layers
from models.starter.minixception import MiniXception, load_minixception, tf_same_padding

PROBA_ATOL = 1e-4
FRAME_STEP = 3
CLIPS = [
    ("crema-d/1001_DFA_ANG_XX.flv", "angry"),
    ("crema-d/1001_DFA_HAP_XX.flv", "happy"),
    ("ravdess/01-01-01-01-01-01-01.mp4", "neutral/calm"),
]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"shared asset missing: {path} (tests read it from ../shared beside the checkout or $HOOVIK_SHARED)"
        )
    return path


@pytest.fixture(scope="session")
def fer_h5(shared_dir: Path) -> Path:
    return _require(shared_dir / "training" / "face-fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5")


@pytest.fixture(scope="session")
def converted(fer_h5: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fer") / "face_fer.safetensors"
    summary = convert_fer_hdf5(fer_h5, out)
    return out, summary


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As the bot runs it (bot.runtime sets torch threads to the engine's setting, the pools give the
    parallelism): with torch's default intra-op threads on a busy 2-core machine a 64x64 forward pass
    measured ~250 ms of spin-waiting instead of ~5 ms."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(converted: tuple[Path, dict[str, Any]]) -> MiniXception:
    return load_minixception(converted[0])


@pytest.fixture(scope="module")
def extractor(face_asset: Path, converted: tuple[Path, dict[str, Any]]) -> Iterator[FerFaceExtractor]:
    with FerFaceExtractor(face_asset, weights_path=converted[0]) as ex:
        yield ex


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(_require(path)), cv2.IMREAD_COLOR)  # decodes by content: 2.jpg is WebP
    assert bgr is not None, f"could not decode {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# -- numpy reference (Keras semantics, NHWC, float64) --------------------------------------------


def _pad(x: np.ndarray, k: list[int], s: list[int], padding: str, value: float = 0.0) -> np.ndarray:
    if padding == "valid":
        return x
    assert padding == "same"
    (t, b), (left, r) = tf_same_padding(x.shape[1], k[0], s[0]), tf_same_padding(x.shape[2], k[1], s[1])
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: list[int], s: list[int]) -> Iterator[tuple[int, int, np.ndarray]]:
    ho, wo = (x.shape[1] - k[0]) // s[0] + 1, (x.shape[2] - k[1]) // s[1] + 1
    for i in range(k[0]):
        for j in range(k[1]):
            yield i, j, x[:, i : i + s[0] * (ho - 1) + 1 : s[0], j : j + s[1] * (wo - 1) + 1 : s[1], :]


def _np_conv(x: np.ndarray, kernel: np.ndarray, s: list[int], padding: str) -> np.ndarray:
    kh, kw = kernel.shape[:2]
    x = _pad(x, [kh, kw], s, padding)
    return sum(np.einsum("nhwc,co->nhwo", win, kernel[i, j]) for i, j, win in _windows(x, [kh, kw], s))


def _np_depthwise(x: np.ndarray, kernel: np.ndarray, s: list[int], padding: str) -> np.ndarray:
    kh, kw, c, m = kernel.shape
    x = _pad(x, [kh, kw], s, padding)
    out = sum(np.einsum("nhwc,cm->nhwcm", win, kernel[i, j]) for i, j, win in _windows(x, [kh, kw], s))
    return out.reshape(*out.shape[:3], c * m)  # TF order: channel c, multiplier m → c*M + m


def _np_maxpool(x: np.ndarray, k: list[int], s: list[int], padding: str) -> np.ndarray:
    x = _pad(x, k, s, padding, value=-np.inf)
    return np.max(np.stack([win for _, _, win in _windows(x, k, s)]), axis=0)


def _keras_weights(h5_path: Path) -> dict[str, dict[str, np.ndarray]]:
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(str(h5_path), "r") as f:
        group = f["model_weights"]
        for layer in group:
            for full in group[layer].attrs.get("weight_names", []):
                name = full.decode() if isinstance(full, bytes) else full
                out.setdefault(layer, {})[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(
                    group[layer][name], dtype=np.float64
                )
    return out


def numpy_reference(h5_path: Path, images: np.ndarray) -> np.ndarray:
    """(N, 64, 64) inputs in [-1, 1] → (N, 7) softmax, by walking the HDF5 model config."""
    import h5py

    with h5py.File(str(h5_path), "r") as f:
        output = json.loads(f.attrs["model_config"])["config"]["output_layers"][0][0]
    weights = _keras_weights(h5_path)
    values: dict[str, np.ndarray] = {}
    for layer in read_keras_layers(h5_path):
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        ins = [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = images.astype(np.float64)[..., None]
        elif kind == "Conv2D":
            y = _np_conv(ins[0], w["kernel"], cfg["strides"], cfg["padding"])
            if cfg["use_bias"]:
                y = y + w["bias"]
            assert cfg["activation"] == "linear"
        elif kind == "SeparableConv2D":
            y = _np_depthwise(ins[0], w["depthwise_kernel"], cfg["strides"], cfg["padding"])
            y = _np_conv(y, w["pointwise_kernel"], [1, 1], "valid")
            assert not cfg["use_bias"] and cfg["activation"] == "linear"
        elif kind == "BatchNormalization":
            y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation" and cfg["activation"] == "relu":
            y = np.maximum(ins[0], 0.0)
        elif kind == "Activation" and cfg["activation"] == "softmax":
            e = np.exp(ins[0] - ins[0].max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        elif kind == "MaxPooling2D":
            y = _np_maxpool(ins[0], cfg["pool_size"], cfg["strides"], cfg["padding"])
        elif kind == "Add":
            y = np.sum(np.stack(ins), axis=0)
        elif kind == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"reference has no {kind} ({cfg.get('activation')})")
        values[name] = y
    return values[output]


# -- conversion ------------------------------------------------------------------------------------


def test_torch_matches_numpy_reference(
    fer_h5: Path, model: MiniXception, extractor: FerFaceExtractor, media_dir: Path
) -> None:
    rng = np.random.default_rng(0)
    random = rng.uniform(-1.0, 1.0, size=(4, CROP_SIZE, CROP_SIZE)).astype(np.float32)
    rgb = _read_rgb(media_dir / "photos" / "1.jpg")
    landmarks = extractor.landmarks_px(rgb)
    assert landmarks is not None
    crops = np.concatenate([random, aligned_face_crop(rgb, landmarks)[None]])
    expected = numpy_reference(fer_h5, crops)
    got = model.predict_proba(crops)
    assert got.dtype == np.float32 and got.shape == (5, len(FER_CLASSES))
    diff = float(np.abs(got - expected).max())
    print(f"torch vs numpy reference: max abs diff {diff:.3e}")
    assert diff < PROBA_ATOL
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_conversion_summary_and_determinism(
    fer_h5: Path, converted: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, summary = converted
    again = convert_fer_hdf5(fer_h5, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    assert again["sha256"] == summary["sha256"]
    assert summary["layers"] == len(read_keras_layers(fer_h5))
    assert summary["params"] == 58423  # Keras' "Total params" for this model
    assert summary["classes"] == list(FER_CLASSES)


def test_tf_same_padding_is_asymmetric() -> None:
    assert tf_same_padding(60, 3, 2) == (0, 1)  # the extra row goes after (bottom/right)
    assert tf_same_padding(15, 3, 2) == (1, 1)
    assert tf_same_padding(60, 1, 2) == (0, 0)
    assert tf_same_padding(8, 3, 1) == (1, 1)


# -- crop ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_landmarks(extractor: FerFaceExtractor, media_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rgb = _read_rgb(media_dir / "photos" / "1.jpg")
    landmarks = extractor.landmarks_px(rgb)
    assert landmarks is not None
    return rgb, landmarks


@pytest.mark.parametrize("shift", [(-0.45, 0.0), (0.0, 0.6), (0.9, -0.9), (-5.0, 3.0)])
def test_crop_at_or_beyond_the_edge_is_padded(photo_landmarks: tuple[np.ndarray, np.ndarray], shift: tuple) -> None:
    rgb, landmarks = photo_landmarks
    h, w = rgb.shape[:2]
    moved = landmarks + np.array([shift[0] * w, shift[1] * h], dtype=np.float32)
    for image in (rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)):
        crop = aligned_face_crop(image, moved)
        assert crop.shape == (CROP_SIZE, CROP_SIZE) and crop.dtype == np.float32
        assert np.all(np.isfinite(crop)) and crop.min() >= -1.0 and crop.max() <= 1.0


def test_crop_levels_a_tilted_face(photo_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    """Rotating the image (and its landmarks) by 20° gives nearly the same crop."""
    rgb, landmarks = photo_landmarks
    h, w = rgb.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 20.0, 1.0)
    tilted = cv2.warpAffine(rgb, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    tilted_landmarks = landmarks @ rot[:, :2].T + rot[:, 2]
    a, b = aligned_face_crop(rgb, landmarks), aligned_face_crop(tilted, tilted_landmarks)
    inner = (slice(8, 56), slice(8, 56))  # the corners may see the rotated image's border
    assert np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1] > 0.97
    assert np.abs(a[inner] - b[inner]).mean() < 0.05


def test_fer_to_six_order_and_renormalisation() -> None:
    p7 = np.array([0.1, 0.2, 0.3, 0.05, 0.05, 0.2, 0.1], dtype=np.float32)
    p6 = fer_to_six(p7)
    assert p6.dtype == np.float32 and p6.shape == (6,)
    np.testing.assert_allclose(p6, np.array([0.1, 0.3, 0.2, 0.05, 0.05, 0.1]) / 0.8, rtol=1e-6)
    fer_for_ours = {"angry": "angry", "fearful": "fear", "disgust": "disgust", "happy": "happy", "sad": "sad"}
    fer_for_ours["neutral/calm"] = "neutral"
    for ours, fer in fer_for_ours.items():
        one_hot = np.eye(7, dtype=np.float32)[FER_CLASSES.index(fer)]
        assert CLASS_NAMES[int(fer_to_six(one_hot).argmax())] == ours
    np.testing.assert_allclose(fer_to_six(np.eye(7, dtype=np.float32)[5]), np.full(6, 1 / 6), rtol=1e-6)
    assert fer_to_six(np.zeros((2, 10, 7), np.float32)).shape == (2, 10, 6)


# -- extractor -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1.jpg", "2.jpg"])
def test_photos_give_seven_probabilities(extractor: FerFaceExtractor, media_dir: Path, name: str) -> None:
    result = extractor.extract(_read_rgb(media_dir / "photos" / name))
    assert result.ok and result.vector is not None
    assert result.vector.shape == (extractor.dim,) == (7,) and result.vector.dtype == np.float32
    assert abs(float(result.vector.sum()) - 1.0) < 1e-5 and result.vector.min() >= 0.0


def test_bad_input_and_no_face(extractor: FerFaceExtractor) -> None:
    from models.extractors import FaceExtractor

    assert isinstance(extractor, FaceExtractor)
    assert extractor.extract(np.zeros((64, 64), np.uint8)).reason == "bad_input"
    assert extractor.extract(np.zeros((64, 64, 3), np.float32)).reason == "bad_input"
    assert extractor.extract(np.full((240, 320, 3), 128, np.uint8)).reason == "no_face"


@pytest.mark.parametrize(("clip", "label"), CLIPS, ids=[label for _, label in CLIPS])
def test_clip_majority_label(extractor: FerFaceExtractor, media_dir: Path, clip: str, label: str) -> None:
    counts: collections.Counter[str] = collections.Counter()
    with av.open(str(_require(media_dir / clip))) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i % FRAME_STEP:
                continue
            result = extractor.extract(frame.to_ndarray(format="rgb24"))
            counts[
                CLASS_NAMES[int(fer_to_six(result.vector).argmax())] if result.vector is not None else "no_face"
            ] += 1
    print(f"{clip}: {dict(counts.most_common())}")
    assert counts.most_common(1)[0][0] == label, dict(counts)
