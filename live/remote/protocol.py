"""The wire format between the model server and its clients: an explicit schema, no pickle.

Every WebSocket message is one binary frame::

    4 bytes   big-endian length N of the header
    N bytes   UTF-8 JSON header: {"type": ..., "seq": ..., <scalar fields>, "arrays": [<array specs>]}
    payload   the arrays' bytes, back to back, in the header's order

An array spec is ``{"name", "dtype", "shape", "codec", "nbytes"}``. ``codec`` is ``raw`` (the C-order bytes of
``dtype``/``shape``, lossless), ``jpeg`` or ``png`` (uint8 HxWx3 images only). Each message type declares its
scalar fields and its arrays (dtype, shape with the session's H, W and K filled in, allowed codecs); anything
else - an unknown type or field, a wrong dtype or shape, a size over the limit, bytes that do not add up,
non-finite keypoints, an image that does not decode to its declared shape - is a :class:`ProtocolError`, and
the server closes that stream (only that one) with the reason.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL = 3                      # 2: the welcome names the replica's direct port; 3: the model's lip keypoints and gain
MAX_HEADER = 4096                 # bytes of JSON header
HELLO_LIMIT = MAX_HEADER + 4      # the first message carries no arrays
IMAGE_CODECS = ('raw', 'jpeg', 'png')
WIRE_CODECS = ('raw', 'jpeg')     # what a client may ask for (png: lossless but ~10x slower to encode than raw)
JPEG_QUALITY = 90
DTYPES = {'uint8': np.uint8, 'float32': np.float32}

# WebSocket close codes (RFC 6455 / IANA): why a stream was closed
CLOSE_POLICY = 1008      # wrong or missing token
CLOSE_BAD_DATA = 1003    # a message that does not fit the schema
CLOSE_TOO_BIG = 1009     # a message over the size limit
CLOSE_SERVER_ERROR = 1011


class ProtocolError(ValueError):
    """A message that does not fit the schema; ``close_code`` says which WebSocket close code to send."""

    def __init__(self, message: str, close_code: int = CLOSE_BAD_DATA):
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    shape: tuple[str | int, ...]         # 'H', 'W', 'K' are the session's frame height, width, keypoint count
    codecs: tuple[str, ...] = ('raw',)


@dataclass(frozen=True)
class MessageSpec:
    fields: dict[str, type | tuple[type, ...]]   # scalar header fields (besides type and seq) -> allowed types
    arrays: dict[str, ArraySpec]


IMAGE = ArraySpec('uint8', ('H', 'W', 3), IMAGE_CODECS)
KP = {'kp_value': ArraySpec('float32', (1, 'K', 2)), 'kp_jacobian': ArraySpec('float32', (1, 'K', 2, 2))}

# client -> server
CLIENT_MESSAGES: dict[str, MessageSpec] = {
    'hello': MessageSpec({'protocol': int, 'token': str, 'codec': str, 'client': str}, {}),
    'avatar': MessageSpec({}, {'image': IMAGE}),                  # prepare this stream's avatar (once)
    'frame': MessageSpec({}, dict(KP)),                           # normalised driving keypoints -> one frame
    'keypoints': MessageSpec({}, {'image': IMAGE}),               # a driving crop -> its keypoints
}
# server -> client
SERVER_MESSAGES: dict[str, MessageSpec] = {
    'welcome': MessageSpec({'protocol': int, 'server': str, 'device': str, 'runtime': str, 'model': str,
                            'model_key': str, 'height': int, 'width': int, 'num_kp': int, 'max_batch': int,
                            'replica': str, 'direct_port': int, 'mouth_keypoints': str, 'mouth_gain': float}, {}),
    'avatar_ready': MessageSpec({'server_ms': float, 'model_ms': float}, dict(KP)),
    'frame': MessageSpec({'server_ms': float, 'model_ms': float, 'batch': int}, {'image': IMAGE}),
    'keypoints': MessageSpec({'server_ms': float, 'model_ms': float}, dict(KP)),
    'error': MessageSpec({'code': str, 'message': str}, {}),
}


@dataclass(frozen=True)
class Limits:
    """What a session's arrays must look like: the model's frame size and keypoint count."""
    height: int
    width: int
    num_kp: int

    def shape(self, spec: ArraySpec) -> tuple[int, ...]:
        sizes = {'H': self.height, 'W': self.width, 'K': self.num_kp}
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)

    def max_message(self, specs: dict[str, MessageSpec]) -> int:
        """The largest message any type may be: header + arrays (an encoded image may not exceed 1.5x raw)."""
        most = 0
        for m in specs.values():
            total = 0
            for a in m.arrays.values():
                raw = int(np.prod(self.shape(a))) * np.dtype(DTYPES[a.dtype]).itemsize
                total += raw if a.codecs == ('raw',) else encoded_limit(raw)
            most = max(most, total)
        return 4 + MAX_HEADER + most


def encoded_limit(raw_bytes: int) -> int:
    return raw_bytes + raw_bytes // 2 + 1024


@dataclass
class Message:
    type: str
    seq: int
    fields: dict[str, Any]
    arrays: dict[str, np.ndarray]
    nbytes: int = 0            # its size on the wire


# -- encoding -----------------------------------------------------------------------------------------------
def encode_image(image: np.ndarray, codec: str) -> bytes:
    """HxWx3 uint8 -> bytes in ``codec``."""
    image = np.ascontiguousarray(image, np.uint8)
    if codec == 'raw':
        return image.tobytes()
    from PIL import Image
    buf = io.BytesIO()
    if codec == 'jpeg':
        Image.fromarray(image).save(buf, format='JPEG', quality=JPEG_QUALITY)
    elif codec == 'png':
        Image.fromarray(image).save(buf, format='PNG', compress_level=1)
    else:
        raise ProtocolError(f'unknown image codec {codec!r} (known: {", ".join(IMAGE_CODECS)})')
    return buf.getvalue()


def encode(type_: str, seq: int = 0, *, codecs: dict[str, str] | None = None,
           arrays: dict[str, np.ndarray] | None = None, **fields: Any) -> bytes:
    """One message. Arrays go raw unless ``codecs`` names an image codec for them."""
    arrays, codecs = arrays or {}, codecs or {}
    specs, payload = [], []
    for name, arr in arrays.items():
        codec = codecs.get(name, 'raw')
        dtype = 'uint8' if arr.dtype == np.uint8 else 'float32'
        data = encode_image(arr, codec) if codec != 'raw' else np.ascontiguousarray(arr, DTYPES[dtype]).tobytes()
        specs.append({'name': name, 'dtype': dtype, 'shape': list(arr.shape), 'codec': codec, 'nbytes': len(data)})
        payload.append(data)
    header = json.dumps({'type': type_, 'seq': int(seq), **fields, 'arrays': specs},
                        separators=(',', ':')).encode()
    if len(header) > MAX_HEADER:
        raise ProtocolError(f'header of {len(header)} bytes is over the {MAX_HEADER}-byte limit', CLOSE_TOO_BIG)
    return b''.join([struct.pack('>I', len(header)), header, *payload])


# -- decoding and validation --------------------------------------------------------------------------------
def decode(data: bytes, specs: dict[str, MessageSpec], limits: Limits | None,
           max_bytes: int | None = None) -> Message:
    """Parse and check one message against ``specs`` (with ``limits`` for the array shapes); ProtocolError
    says what is wrong. ``limits`` None: no arrays are accepted (before the handshake)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError('expected a binary message, got text')
    data = bytes(data)
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(f'message of {len(data)} bytes is over the {max_bytes}-byte limit', CLOSE_TOO_BIG)
    if len(data) < 4:
        raise ProtocolError('message shorter than its 4-byte header length')
    (n,) = struct.unpack('>I', data[:4])
    if n > MAX_HEADER or 4 + n > len(data):
        raise ProtocolError(f'header length {n} is over the limit ({MAX_HEADER}) or past the end of the message')
    try:
        header = json.loads(data[4:4 + n].decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f'header is not UTF-8 JSON: {exc}') from None
    if not isinstance(header, dict):
        raise ProtocolError('header must be a JSON object')
    kind = header.pop('type', None)
    spec = specs.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ProtocolError(f'unknown message type {kind!r} (expected one of {", ".join(specs)})')
    seq = header.pop('seq', None)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2 ** 53:
        raise ProtocolError(f'{kind}: seq must be a non-negative integer, got {seq!r}')
    array_specs = header.pop('arrays', [])
    fields = _check_fields(kind, spec, header)
    arrays = _read_arrays(kind, spec, array_specs, memoryview(data)[4 + n:], limits)
    return Message(kind, seq, fields, arrays, len(data))


def _check_fields(kind: str, spec: MessageSpec, header: dict) -> dict[str, Any]:
    unknown = set(header) - set(spec.fields)
    if unknown:
        raise ProtocolError(f'{kind}: unknown field(s) {", ".join(sorted(unknown))}')
    for name, types in spec.fields.items():
        if name not in header:
            raise ProtocolError(f'{kind}: field {name!r} is missing')
        value = header[name]
        ok = isinstance(value, types) and not isinstance(value, bool)
        if types is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ProtocolError(f'{kind}: field {name!r} has the wrong type ({type(value).__name__})')
        if isinstance(value, str) and len(value) > 1024:
            raise ProtocolError(f'{kind}: field {name!r} is longer than 1024 characters')
    return dict(header)


def _read_arrays(kind: str, spec: MessageSpec, declared: Any, payload: memoryview,
                 limits: Limits | None) -> dict[str, np.ndarray]:
    if not isinstance(declared, list) or len(declared) != len(spec.arrays):
        raise ProtocolError(f'{kind}: expected arrays {", ".join(spec.arrays) or "(none)"}')
    if spec.arrays and limits is None:
        raise ProtocolError(f'{kind}: not allowed before the handshake')
    out: dict[str, np.ndarray] = {}
    offset = 0
    for item in declared:
        if not isinstance(item, dict) or set(item) != {'name', 'dtype', 'shape', 'codec', 'nbytes'}:
            raise ProtocolError(f'{kind}: an array spec needs exactly name, dtype, shape, codec, nbytes')
        name = item['name']
        a = spec.arrays.get(name) if isinstance(name, str) else None
        if a is None or name in out:
            raise ProtocolError(f'{kind}: unexpected array {name!r}')
        shape = limits.shape(a)
        if item['dtype'] != a.dtype:
            raise ProtocolError(f'{kind}: {name} must be {a.dtype}, got {item["dtype"]!r}')
        if item['shape'] != list(shape):
            raise ProtocolError(f'{kind}: {name} must have shape {list(shape)}, got {item["shape"]!r}')
        if item['codec'] not in a.codecs:
            raise ProtocolError(f'{kind}: {name} codec must be one of {", ".join(a.codecs)}, got {item["codec"]!r}')
        raw = int(np.prod(shape)) * np.dtype(DTYPES[a.dtype]).itemsize
        size = item['nbytes']
        limit = raw if item['codec'] == 'raw' else encoded_limit(raw)
        if not isinstance(size, int) or isinstance(size, bool) or not (0 < size <= limit) \
                or (item['codec'] == 'raw' and size != raw):
            raise ProtocolError(f'{kind}: {name} nbytes {size!r} does not fit its shape (at most {limit})',
                                CLOSE_TOO_BIG if isinstance(size, int) and size > limit else CLOSE_BAD_DATA)
        if offset + size > len(payload):
            raise ProtocolError(f'{kind}: the message ends inside {name}')
        chunk = payload[offset:offset + size]
        offset += size
        if item['codec'] == 'raw':
            arr = np.frombuffer(chunk, DTYPES[a.dtype]).reshape(shape).copy()
        else:
            arr = decode_image(chunk, item['codec'], shape)
        if arr.dtype == np.float32 and not np.isfinite(arr).all():
            raise ProtocolError(f'{kind}: {name} has NaN or infinite values')
        out[name] = arr
    if offset != len(payload):
        raise ProtocolError(f'{kind}: {len(payload) - offset} bytes after the last array')
    return out


def decode_image(data: bytes | memoryview, codec: str, shape: tuple[int, ...]) -> np.ndarray:
    """Encoded bytes -> HxWx3 uint8 of exactly ``shape``; the size is checked before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(io.BytesIO(bytes(data)), formats=[codec.upper()])
        if img.size != (shape[1], shape[0]):
            raise ProtocolError(f'image is {img.size[0]}x{img.size[1]}, declared {shape[1]}x{shape[0]}')
        arr = np.array(img.convert('RGB'))   # a writable copy
    except ProtocolError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ProtocolError(f'image does not decode as {codec}: {exc}') from None
    return arr


def check_codec(codec: str) -> str:
    if codec not in WIRE_CODECS:
        raise ProtocolError(f'codec must be one of {", ".join(WIRE_CODECS)}, got {codec!r}')
    return codec
