"""Convert the Keras mini-Xception FER2013 HDF5 file into the safetensors file the bot loads.

Why: the source (``oarriaga/face_classification``, MIT) is a Keras 2.0 HDF5 file; loading it at
run time would need h5py/TensorFlow and would trust a Keras model config. The converted file holds
plain tensors in torch layout plus, in its metadata, the architecture description that
:class:`models.starter.minixception.MiniXception` rebuilds — derived from the file's own
``model_config``, so nothing about the network is restated by hand.

Layout mapping (Keras, channels_last → torch):

* Conv2D ``kernel`` (kh, kw, in, out) → (out, in, kh, kw)
* SeparableConv2D ``depthwise_kernel`` (kh, kw, C, M) → (C*M, 1, kh, kw) (TF orders the depthwise
  outputs channel-major, c*M + m, as torch's grouped conv does); ``pointwise_kernel``
  (1, 1, C*M, out) → (out, C*M, 1, 1)
* BatchNormalization ``gamma``/``beta``/``moving_mean``/``moving_variance`` unchanged (missing
  gamma/beta when ``scale``/``center`` is off become ones/zeros)

Determinism: the same HDF5 gives byte-identical output. Tensor names are ``<layer>.<weight>`` and
safetensors sorts them; the metadata is a *single* key whose value is canonical JSON (sorted keys,
fixed separators, no paths or timestamps). A single key matters: safetensors 0.8 writes
``__metadata__`` in Rust HashMap order, which differs between calls once there are two or more keys.

h5py is imported inside the functions: only this build step needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from models.starter.face import FER_CLASSES
from models.starter.minixception import ARCH_METADATA_KEY, FORMAT_NAME, FORMAT_VERSION, INPUT_SIZE

SOURCE_LICENCE: Final[str] = "MIT (oarriaga/face_classification); FER2013 data terms apply to what it learned"

_KERAS_OPS: Final[dict[str, str]] = {
    "InputLayer": "input",
    "Conv2D": "conv",
    "SeparableConv2D": "sepconv",
    "BatchNormalization": "bn",
    "MaxPooling2D": "maxpool",
    "Add": "add",
    "GlobalAveragePooling2D": "gap",
}


class ConversionError(ValueError):
    """The HDF5 file holds a layer or setting this converter does not implement exactly."""


def _json_attr(value: Any) -> Any:
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return json.loads(text)


def read_keras_model_config(h5_path: Path | str) -> dict[str, Any]:
    """The HDF5 file's parsed ``model_config`` attribute (``{"class_name": ..., "config": ...}``)."""
    import h5py

    with h5py.File(str(h5_path), "r") as f:
        if "model_config" not in f.attrs:
            raise ConversionError(f"{h5_path}: no model_config attribute (weights-only file?)")
        config: dict[str, Any] = _json_attr(f.attrs["model_config"])
    return config


def read_keras_layers(h5_path: Path | str) -> list[dict[str, Any]]:
    """The model config's layer list: dicts with ``class_name``, ``name``, ``config``, ``inbound_nodes``."""
    layers: list[dict[str, Any]] = read_keras_model_config(h5_path)["config"]["layers"]
    return layers


def read_keras_weights(h5_path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """Per layer, its weights by short name (``kernel``, ``gamma``, ...) in Keras layout, float32."""
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(str(h5_path), "r") as f:
        group = f.get("model_weights", f)  # full-model files nest the weights; weights-only files do not
        for raw_layer in group.attrs["layer_names"]:
            layer = raw_layer.decode("utf-8") if isinstance(raw_layer, bytes) else str(raw_layer)
            names = group[layer].attrs.get("weight_names", [])
            weights: dict[str, np.ndarray] = {}
            for raw in names:
                full = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                short = full.rsplit("/", 1)[-1].split(":", 1)[0]
                if short in weights:
                    raise ConversionError(f"layer {layer!r}: weight {short!r} appears twice")
                weights[short] = np.asarray(group[layer][full], dtype=np.float32)
            if weights:
                out[layer] = weights
    return out


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value), int(value)]


def _inputs(layer: Mapping[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes", [])
    if not nodes:
        return []
    if len(nodes) != 1:
        raise ConversionError(f"layer {layer['name']!r} is called {len(nodes)} times (shared layers unsupported)")
    return [str(entry[0]) for entry in nodes[0]]


def architecture_from_keras(
    model_config: Mapping[str, Any], classes: Sequence[str] = FER_CLASSES, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The :class:`MiniXception` description of a Keras functional ``model_config``; refuses what it can't match."""
    config = model_config["config"]
    layers_out: list[dict[str, Any]] = []
    channels: dict[str, int] = {}
    for layer in config["layers"]:
        kind, name, cfg = layer["class_name"], str(layer["name"]), layer["config"]
        inputs = _inputs(layer)
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ConversionError(f"layer {name!r}: data_format {cfg['data_format']!r} unsupported")
        if _pair(cfg.get("dilation_rate", 1)) != [1, 1]:
            raise ConversionError(f"layer {name!r}: dilation {cfg['dilation_rate']} unsupported")
        in_ch = channels[inputs[0]] if inputs else 0
        spec: dict[str, Any] = {"name": name, "inputs": inputs}
        if kind == "Activation":
            act = cfg["activation"]
            if act not in ("relu", "softmax"):
                raise ConversionError(f"layer {name!r}: activation {act!r} unsupported")
            spec["op"] = act
        elif kind in _KERAS_OPS:
            spec["op"] = _KERAS_OPS[kind]
        else:
            raise ConversionError(f"layer {name!r}: Keras layer {kind!r} unsupported")
        op = spec["op"]
        if op in ("conv", "sepconv"):
            if cfg.get("activation", "linear") != "linear":
                raise ConversionError(f"layer {name!r}: fused activation {cfg['activation']!r} unsupported")
            spec.update(
                in_channels=in_ch,
                filters=int(cfg["filters"]),
                kernel_size=_pair(cfg["kernel_size"]),
                strides=_pair(cfg["strides"]),
                padding=str(cfg["padding"]),
                use_bias=bool(cfg["use_bias"]),
            )
            if op == "sepconv":
                spec["depth_multiplier"] = int(cfg.get("depth_multiplier", 1))
            out_ch = int(cfg["filters"])
        elif op == "bn":
            if int(cfg.get("axis", -1)) not in (-1, 3):
                raise ConversionError(f"layer {name!r}: BatchNormalization axis {cfg['axis']} unsupported")
            spec.update(channels=in_ch, epsilon=float(cfg["epsilon"]))
            out_ch = in_ch
        elif op == "maxpool":
            spec.update(pool_size=_pair(cfg["pool_size"]), strides=_pair(cfg["strides"]), padding=str(cfg["padding"]))
            out_ch = in_ch
        elif op == "input":
            shape = cfg["batch_input_shape"]
            if list(shape[1:]) != [INPUT_SIZE, INPUT_SIZE, 1]:
                raise ConversionError(f"input {name!r}: shape {shape} is not (None, 64, 64, 1)")
            out_ch = 1
        elif op == "add":
            if len({channels[i] for i in inputs}) != 1:
                raise ConversionError(f"layer {name!r}: Add of different channel counts")
            out_ch = in_ch
        else:  # relu, softmax, gap
            out_ch = in_ch
        if "padding" in spec and spec["padding"] not in ("same", "valid"):
            raise ConversionError(f"layer {name!r}: padding {spec['padding']!r} unsupported")
        channels[name] = out_ch
        layers_out.append(spec)
    outputs = config.get("output_layers", [])
    if len(outputs) != 1:
        raise ConversionError(f"expected one output layer, got {outputs}")
    output = str(outputs[0][0])
    if channels.get(output) != len(classes):
        raise ConversionError(f"output {output!r} has {channels.get(output)} channels, expected {len(classes)}")
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "classes": list(classes),
        "input": {"shape": [1, INPUT_SIZE, INPUT_SIZE], "color": "gray", "scale": "x/255*2-1"},
        "layers": layers_out,
        "output": output,
        "source": dict(source or {}),
    }


def torch_tensors(arch: Mapping[str, Any], weights: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Keras weights → ``<layer>.<weight>`` arrays in torch layout; every weight must be used."""
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for spec in arch["layers"]:
        name, op = spec["name"], spec["op"]
        w = weights.get(name, {})
        if op == "conv":
            out[f"{name}.kernel"] = w["kernel"].transpose(3, 2, 0, 1)
            expected = {"kernel", "bias"} if spec["use_bias"] else {"kernel"}
        elif op == "sepconv":
            kh, kw, c, m = w["depthwise_kernel"].shape
            out[f"{name}.depthwise_kernel"] = w["depthwise_kernel"].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
            out[f"{name}.pointwise_kernel"] = w["pointwise_kernel"].transpose(3, 2, 0, 1)
            expected = {"depthwise_kernel", "pointwise_kernel"} | ({"bias"} if spec["use_bias"] else set())
        elif op == "bn":
            n = int(spec["channels"])
            out[f"{name}.gamma"] = w.get("gamma", np.ones(n, np.float32))
            out[f"{name}.beta"] = w.get("beta", np.zeros(n, np.float32))
            out[f"{name}.moving_mean"] = w["moving_mean"]
            out[f"{name}.moving_variance"] = w["moving_variance"]
            # gamma/beta are absent when Keras' scale/center is off; the running statistics never are
            expected = ({"gamma", "beta"} & set(w)) | {"moving_mean", "moving_variance"}
        else:
            expected = set()
        if "bias" in expected:
            out[f"{name}.bias"] = w["bias"]
        if set(w) != expected:
            raise ConversionError(f"layer {name!r} ({op}): weights {sorted(w)} != expected {sorted(expected)}")
        used.add(name)
    unused = sorted(set(weights) - used)
    if unused:
        raise ConversionError(f"weights for layers not in the model: {unused}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_fer_hdf5(h5_path: Path | str, out_path: Path | str) -> dict[str, Any]:
    """Write ``out_path`` (safetensors) from the Keras HDF5; returns layers, params, sha256 and more.

    Deterministic: the same HDF5 gives the same bytes (and so the same sha256). The file is written
    to a temporary name beside ``out_path`` and renamed into place.
    """
    import h5py
    from safetensors.numpy import save_file

    h5_path, out_path = Path(h5_path), Path(out_path)
    with h5py.File(str(h5_path), "r") as f:
        raw_version = f.attrs.get("keras_version", b"")
    keras_version = raw_version.decode("utf-8") if isinstance(raw_version, bytes) else str(raw_version)
    source = {
        "file": h5_path.name,
        "sha256": _sha256(h5_path),
        "keras_version": keras_version,
        "licence": SOURCE_LICENCE,
    }
    arch = architecture_from_keras(read_keras_model_config(h5_path), FER_CLASSES, source)
    tensors = torch_tensors(arch, read_keras_weights(h5_path))
    metadata = {ARCH_METADATA_KEY: json.dumps(arch, sort_keys=True, separators=(",", ":"))}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".part", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(out_path),
        "layers": len(arch["layers"]),
        "params": int(sum(t.size for t in tensors.values())),
        "tensors": len(tensors),
        "classes": list(FER_CLASSES),
        "sha256": _sha256(out_path),
        "source_sha256": source["sha256"],
    }
