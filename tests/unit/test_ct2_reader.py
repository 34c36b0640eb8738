"""The CTranslate2 model.bin reader, on small synthetic files written here.

The writer below follows CTranslate2's ``model_spec.py`` byte for byte (the
reader is also exercised on the real packaged models by the integration
tests), so every error path can be reached with a file of a few hundred bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from steno_inference.models.ct2_reader import (
    Ct2DType,
    find_model_parts,
    read_ct2_model,
)
from steno_inference.models.errors import ModelError, ModelFormatError, ModelNotFoundError

pytestmark = pytest.mark.unit

_DTYPE_IDS = {
    np.dtype("float32"): Ct2DType.FLOAT32,
    np.dtype("int8"): Ct2DType.INT8,
    np.dtype("int16"): Ct2DType.INT16,
    np.dtype("int32"): Ct2DType.INT32,
    np.dtype("float16"): Ct2DType.FLOAT16,
}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, *, dtype_id: int | None = None) -> bytes:
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    header = _string(name) + struct.pack("<B", array.ndim)
    header += b"".join(struct.pack("<I", dim) for dim in array.shape)
    type_id = _DTYPE_IDS[array.dtype] if dtype_id is None else dtype_id
    return header + struct.pack("<BI", type_id, len(data)) + data


def _model_bytes(
    variables: list[bytes],
    aliases: dict[str, str] | None = None,
    *,
    version: int = 6,
    spec: str = "WhisperSpec",
    revision: int = 3,
) -> bytes:
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<I", revision)
    out += struct.pack("<I", len(variables)) + b"".join(variables)
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    out += b"".join(_string(alias) + _string(target) for alias, target in aliases.items())
    return out


def _sample() -> tuple[bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {
        "encoder/conv1/weight": rng.standard_normal((4, 3, 3)).astype(np.float16),
        "encoder/layer_norm/gamma": rng.standard_normal(5).astype(np.float32),
        "decoder/embeddings/weight": rng.standard_normal((7, 4)).astype(np.float16),
        "decoder/ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "decoder/codes": np.array([-3, 0, 5], dtype=np.int16),
        "decoder/num_heads": np.array(6, dtype=np.int16),  # rank-0 scalars, as CT2 stores them
        "decoder/pre_norm": np.array(1, dtype=np.int8),
    }
    body = _model_bytes(
        [_variable(name, array) for name, array in arrays.items()],
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    return body, arrays


def test_reads_every_dtype_shape_and_alias(tmp_path: Path) -> None:
    body, arrays = _sample()
    path = tmp_path / "model.bin"
    path.write_bytes(body)

    model = read_ct2_model(path)

    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    for name, expected in arrays.items():
        actual = model.variables[name]
        assert actual.dtype == expected.dtype, name  # fp16 stays fp16
        assert actual.shape == expected.shape, name
        np.testing.assert_array_equal(actual, expected)
    assert int(model.variables["decoder/num_heads"]) == 6
    assert (
        model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]
    )


def test_bfloat16_is_widened_exactly(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625, 65280.0], dtype=np.float32)
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact for these values
    variable = _variable("w", bf16_bits, dtype_id=Ct2DType.BFLOAT16)
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bytes([variable]))

    array = read_ct2_model(path).variables["w"]

    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("cut_fraction", [0.13, 0.5, 0.97])
def test_split_parts_read_as_one_stream(tmp_path: Path, cut_fraction: float) -> None:
    body, arrays = _sample()
    cut = int(len(body) * cut_fraction)  # lands inside a header or a tensor's bytes
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "model.bin.part1").write_bytes(body[:cut])
    (second / "model.bin.part2").write_bytes(body[cut:])

    parts = find_model_parts(first, second)
    model = read_ct2_model(parts)

    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    for name, expected in arrays.items():
        np.testing.assert_array_equal(model.variables[name], expected)
    assert "model.bin.part1+model.bin.part2" in model.source


def test_parts_are_ordered_numerically_and_gaps_are_refused(tmp_path: Path) -> None:
    for number in (1, 2, 10, 3, 4, 5, 6, 7, 8, 9):
        (tmp_path / f"model.bin.part{number}").write_bytes(b"")
    parts = find_model_parts(tmp_path)
    assert [p.name for p in parts] == [f"model.bin.part{n}" for n in range(1, 11)]

    (tmp_path / "model.bin.part3").unlink()
    with pytest.raises(ModelFormatError, match=r"missing model\.bin\.part3"):
        find_model_parts(tmp_path)


def test_single_file_wins_and_empty_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no model\.bin"):
        find_model_parts(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "model.bin.part1").write_bytes(b"")
    assert find_model_parts(tmp_path) == (tmp_path / "model.bin",)


@pytest.mark.parametrize("keep", [0, 3, 10, 40, -1])
def test_truncated_file_names_file_and_position(tmp_path: Path, keep: int) -> None:
    body, _ = _sample()
    path = tmp_path / "model.bin"
    path.write_bytes(body[:keep])

    with pytest.raises(ModelFormatError) as caught:
        read_ct2_model(path)

    message = str(caught.value)
    assert str(path) in message
    assert "truncated" in message
    assert f"ends at byte {len(body[:keep])}" in message


def test_truncated_inside_tensor_data_names_the_variable(tmp_path: Path) -> None:
    body, _ = _sample()
    marker = b"decoder/embeddings/weight\0"
    cut = body.index(marker) + len(marker) + 1 + 8 + 1 + 4 + 10  # 10 bytes into its data
    path = tmp_path / "model.bin"
    path.write_bytes(body[:cut])

    with pytest.raises(ModelFormatError, match="the data of 'decoder/embeddings/weight'"):
        read_ct2_model(path)


def test_unknown_dtype_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bytes([_variable("odd", np.zeros(2, np.float32), dtype_id=9)]))

    with pytest.raises(ModelFormatError) as caught:
        read_ct2_model(path)

    message = str(caught.value)
    assert str(path) in message
    assert "'odd'" in message
    assert "unknown dtype id 9" in message
    assert "4 (float16)" in message  # lists what is known


@pytest.mark.parametrize("version", [0, 3, 7, 0x46554747])
def test_unsupported_binary_version_is_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bytes([], version=version))

    with pytest.raises(ModelFormatError) as caught:
        read_ct2_model(path)

    assert str(path) in str(caught.value)
    assert f"unsupported CTranslate2 binary version {version}" in str(caught.value)


def test_byte_count_that_disagrees_with_shape_is_refused(tmp_path: Path) -> None:
    good = _variable("w", np.zeros((2, 3), np.float16))
    # Same header, but claim 4 fewer bytes and drop them.
    header_end = good.index(b"w\0") + 2 + 1 + 8 + 1
    bad = good[:header_end] + struct.pack("<I", 8) + good[header_end + 4 : -4]
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bytes([bad]))

    with pytest.raises(ModelFormatError, match=r"should hold 12 bytes, but says 8"):
        read_ct2_model(path)


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    body, _ = _sample()
    path = tmp_path / "model.bin"
    path.write_bytes(body + b"\x00" * 5)

    with pytest.raises(ModelFormatError, match="5 unexpected bytes after the last alias"):
        read_ct2_model(path)


def test_missing_file_is_not_found_and_errors_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="cannot open") as caught:
        read_ct2_model(tmp_path / "absent" / "model.bin")
    assert isinstance(caught.value, ModelError)
    assert isinstance(caught.value, ValueError)
