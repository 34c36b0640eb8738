"""Read a CTranslate2 ``model.bin`` into numpy arrays, without CTranslate2.

The format is what ``ctranslate2/specs/model_spec.py`` writes and
``src/models/model.cc`` reads, all little-endian::

    u32 binary_version
    str spec_name; u32 spec_revision
    u32 n_variables
    n_variables x (str name; u8 rank; u32 dims[rank]; u8 dtype; u32 n_bytes; n_bytes of data)
    u32 n_aliases
    n_aliases x (str alias; str target)

where a ``str`` is a u16 length that counts a trailing NUL, then that many
UTF-8 bytes. Binary versions before 4 stored an item size instead of a dtype
id (which could not tell fp16 from int16); they are refused rather than
guessed at.

A model may ship split in parts (``model.bin.part1``, ``model.bin.part2``…)
because package indexes cap file sizes. The parts are read as one stream,
in order, so the concatenation never has to be written to disk. Each
variable is read straight into its own numpy buffer (``readinto``), so the
peak memory is the model's size and fp16 stays fp16 (bf16, which numpy
lacks, is widened to fp32 exactly).
"""

from __future__ import annotations

import enum
import io
import math
import re
import struct
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from steno_inference.models.errors import ModelFormatError, ModelNotFoundError

MODEL_FILE = "model.bin"
PART_SUFFIX_PATTERN = re.compile(r"^model\.bin\.part(\d+)$")

# Version 4 introduced explicit dtype ids; 6 is the newest CTranslate2 writes.
MIN_BINARY_VERSION = 4
MAX_BINARY_VERSION = 6

# Bounds that no real model reaches; beyond them the bytes are not a CT2 model
# and reading on would only allocate nonsense.
MAX_RANK = 8
MAX_VARIABLES = 1_000_000

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Ct2DType(enum.IntEnum):
    """CTranslate2's ``DataType`` enum, as stored in the file."""

    FLOAT32 = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    FLOAT16 = 4
    BFLOAT16 = 5


# Stored bytes → numpy dtype. bf16 is read as raw u16 and widened afterwards.
_NUMPY_DTYPES: dict[Ct2DType, np.dtype[np.generic]] = {
    Ct2DType.FLOAT32: np.dtype("<f4"),
    Ct2DType.INT8: np.dtype("i1"),
    Ct2DType.INT16: np.dtype("<i2"),
    Ct2DType.INT32: np.dtype("<i4"),
    Ct2DType.FLOAT16: np.dtype("<f2"),
    Ct2DType.BFLOAT16: np.dtype("<u2"),
}


@dataclass(frozen=True)
class Ct2Model:
    """The contents of one CTranslate2 model binary."""

    source: str  # the file (or parts) it was read from, for messages
    binary_version: int
    spec_name: str  # e.g. "WhisperSpec"
    spec_revision: int
    variables: Mapping[str, npt.NDArray[np.generic]]  # name → array; aliases resolved in
    aliases: Mapping[str, str]  # alias → target name, as stored


def find_model_parts(*directories: Path) -> tuple[Path, ...]:
    """Return ``model.bin``, or ``model.bin.part1..N`` in order, found in ``directories``.

    A split model's parts may lie in different directories (one wheel per
    part). Raises ModelNotFoundError when there is no model file and
    ModelFormatError when a part is missing or twice present, since the
    concatenation would then be silently wrong.
    """
    where = ", ".join(str(d) for d in directories)
    for directory in directories:
        single = directory / MODEL_FILE
        if single.is_file():
            return (single,)
    numbered: dict[int, Path] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            match = PART_SUFFIX_PATTERN.match(entry.name)
            if not (match and entry.is_file()):
                continue
            number = int(match.group(1))
            if number in numbered:
                raise ModelFormatError(f"{where}: {entry.name} is present twice")
            numbered[number] = entry
    if not numbered:
        raise ModelNotFoundError(f"{where}: no {MODEL_FILE} and no {MODEL_FILE}.part1")
    expected = range(1, max(numbered) + 1)
    missing = [n for n in expected if n not in numbered]
    if missing:
        names = ", ".join(f"{MODEL_FILE}.part{n}" for n in missing)
        raise ModelFormatError(f"{where}: split model is missing {names}")
    return tuple(numbered[n] for n in expected)


def read_ct2_model(parts: Path | Sequence[Path]) -> Ct2Model:
    """Read a CT2 model binary, given as one file or as its parts in order."""
    paths = (parts,) if isinstance(parts, Path) else tuple(parts)
    if not paths:
        raise ModelNotFoundError("no CTranslate2 model file given")
    with ExitStack() as stack:
        files = []
        for path in paths:
            try:
                files.append(stack.enter_context(path.open("rb")))
            except OSError as error:
                raise ModelNotFoundError(f"{path}: cannot open: {error.strerror}") from error
        stream = _PartsStream(files, _describe(paths))
        return _parse(stream)


def _describe(paths: Sequence[Path]) -> str:
    if len(paths) == 1:
        return str(paths[0])
    return f"{'+'.join(p.name for p in paths)} in {paths[0].parent}"


class _PartsStream:
    """Sequential reads over several files as if they were one, tracking the offset."""

    def __init__(self, files: Sequence[io.BufferedReader], source: str) -> None:
        self._files = list(files)
        self._index = 0
        self.source = source
        self.offset = 0

    def read_into(self, buffer: memoryview, what: str) -> None:
        """Fill ``buffer`` completely, crossing part boundaries; fail if the data ends."""
        start = self.offset
        filled = 0
        while filled < len(buffer):
            if self._index >= len(self._files):
                raise ModelFormatError(
                    f"{self.source}: truncated: {what} needs {len(buffer)} bytes at byte "
                    f"{start}, but the data ends at byte {start + filled}"
                )
            count = self._files[self._index].readinto(buffer[filled:])
            if not count:
                self._index += 1
                continue
            filled += count
            self.offset += count

    def read(self, size: int, what: str) -> bytes:
        buffer = bytearray(size)
        self.read_into(memoryview(buffer), what)
        return bytes(buffer)

    def remaining(self) -> int:
        """Bytes left after the current offset, over all parts (consumes nothing)."""
        total = 0
        for file in self._files[self._index :]:
            position = file.tell()
            total += file.seek(0, 2) - position
            file.seek(position)
        return total

    def u8(self, what: str) -> int:
        value: int = _U8.unpack(self.read(_U8.size, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.read(_U32.size, what))[0]
        return value

    def string(self, what: str) -> str:
        length: int = _U16.unpack(self.read(_U16.size, f"the length of {what}"))[0]
        raw = self.read(length, what)
        # The length counts a trailing NUL; CTranslate2 reads a C string, so
        # anything after the first NUL is ignored there too.
        text, _, _ = raw.partition(b"\0")
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ModelFormatError(
                f"{self.source}: {what} at byte {self.offset - length} is not UTF-8"
            ) from error


def _parse(stream: _PartsStream) -> Ct2Model:
    source = stream.source
    version = stream.u32("the binary version")
    if not MIN_BINARY_VERSION <= version <= MAX_BINARY_VERSION:
        raise ModelFormatError(
            f"{source}: unsupported CTranslate2 binary version {version} (this reader "
            f"supports {MIN_BINARY_VERSION} to {MAX_BINARY_VERSION}); is it a CT2 model.bin?"
        )
    spec_name = stream.string("the spec name")
    spec_revision = stream.u32("the spec revision")
    count = stream.u32("the variable count")
    if count > MAX_VARIABLES:
        raise ModelFormatError(f"{source}: implausible variable count {count}: corrupt file")

    variables: dict[str, npt.NDArray[np.generic]] = {}
    for index in range(count):
        name = stream.string(f"the name of variable {index}")
        variables[name] = _read_variable(stream, name)

    aliases: dict[str, str] = {}
    alias_count = stream.u32("the alias count")
    if alias_count > MAX_VARIABLES:
        raise ModelFormatError(f"{source}: implausible alias count {alias_count}: corrupt file")
    for index in range(alias_count):
        alias = stream.string(f"alias {index}")
        aliases[alias] = stream.string(f"the target of alias {alias!r}")
    for alias, target in aliases.items():
        # As in CTranslate2, an alias of a variable that does not exist is ignored.
        if target in variables:
            variables[alias] = variables[target]

    trailing = stream.remaining()
    if trailing:
        raise ModelFormatError(
            f"{source}: {trailing} unexpected bytes after the last alias at byte "
            f"{stream.offset} (parts out of order, or not a CT2 model)"
        )
    return Ct2Model(
        source=source,
        binary_version=version,
        spec_name=spec_name,
        spec_revision=spec_revision,
        variables=variables,
        aliases=aliases,
    )


def _read_variable(stream: _PartsStream, name: str) -> npt.NDArray[np.generic]:
    source = stream.source
    rank = stream.u8(f"the rank of {name!r}")
    if rank > MAX_RANK:
        raise ModelFormatError(f"{source}: variable {name!r} has rank {rank}: corrupt file")
    shape = tuple(stream.u32(f"dimension {axis} of {name!r}") for axis in range(rank))
    dtype_id = stream.u8(f"the dtype of {name!r}")
    try:
        dtype = Ct2DType(dtype_id)
    except ValueError:
        known = ", ".join(f"{d.value} ({d.name.lower()})" for d in Ct2DType)
        raise ModelFormatError(
            f"{source}: variable {name!r} has unknown dtype id {dtype_id} (known: {known})"
        ) from None
    n_bytes = stream.u32(f"the byte count of {name!r}")
    item = _NUMPY_DTYPES[dtype]
    expected = math.prod(shape) * item.itemsize
    if n_bytes != expected:
        raise ModelFormatError(
            f"{source}: variable {name!r} of shape {list(shape)} and dtype "
            f"{dtype.name.lower()} should hold {expected} bytes, but says {n_bytes}"
        )
    raw = np.empty(n_bytes, dtype=np.uint8)
    stream.read_into(raw.data, f"the data of {name!r}")
    array = raw.view(item).reshape(shape)
    if dtype is Ct2DType.BFLOAT16:
        # bf16 is the top half of an fp32: shifting it up is exact.
        widened: npt.NDArray[np.generic] = (array.astype("<u4") << 16).view("<f4")
        return widened
    return array
