"""HPACK (RFC 7541) for the benchmark's HTTP/2 client: constant request blocks, stateless trailers.

The client announces ``SETTINGS_HEADER_TABLE_SIZE = 0``, so a server never
refers to a dynamic table: every header block it sends decodes on its own,
and the (few distinct) trailer blocks can be decoded once and cached by their
bytes. Requests are encoded as literals without indexing, so one block per
(authority, method path) is built once and reused for every call.

Huffman-coded strings are decoded with the ``hpack`` package when it is
installed (only error trailers need them); without it, a status whose header
name is Huffman-coded is still found (it is the only small all-digit value).
"""

from __future__ import annotations

from collections.abc import Callable

# RFC 7541 Appendix A: the static table entries a gRPC response may reference.
_STATIC: tuple[tuple[bytes, bytes], ...] = (
    (b"", b""),
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)

HUFFMAN_UNDECODED = b"\x00huffman"
"""Stands for a Huffman-coded string when the ``hpack`` package is not installed."""


class HeaderDecodeError(ValueError):
    """A header block this stateless decoder cannot read (e.g. a dynamic table reference)."""


def encode_int(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name_index: int, name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, raw (non-Huffman) strings."""
    if name_index:
        out = encode_int(name_index, 4, 0x00)
    else:
        out = b"\x00" + encode_int(len(name), 7, 0x00) + name
    return out + encode_int(len(value), 7, 0x00) + value


def request_block(authority: str, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The header block of a gRPC call to ``path`` (constant: build it once, send it every call)."""
    parts = [
        b"\x83",  # :method: POST (static 3)
        b"\x86",  # :scheme: http (static 6)
        _literal(4, b"", path.encode()),  # :path
        _literal(1, b"", authority.encode()),  # :authority
        _literal(31, b"", b"application/grpc"),  # content-type
        _literal(0, b"te", b"trailers"),
    ]
    parts.extend(_literal(0, key.encode(), value.encode()) for key, value in metadata)
    return b"".join(parts)


def _huffman_decoder() -> Callable[[bytes], bytes] | None:
    try:
        from hpack.huffman_table import decode_huffman  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    def decode(raw: bytes) -> bytes:
        return bytes(decode_huffman(raw))

    return decode


_decode_huffman = _huffman_decoder()


def _decode_int(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _decode_string(block: bytes, pos: int) -> tuple[bytes, int]:
    huffman = block[pos] & 0x80
    length, pos = _decode_int(block, pos, 7)
    raw = bytes(block[pos : pos + length])
    if len(raw) != length:
        raise HeaderDecodeError("truncated string")
    pos += length
    if huffman:
        if _decode_huffman is None:
            return HUFFMAN_UNDECODED, pos
        return _decode_huffman(raw), pos
    return raw, pos


def _static(index: int) -> tuple[bytes, bytes]:
    if 0 < index < len(_STATIC):
        return _STATIC[index]
    raise HeaderDecodeError(f"header index {index} is not in the static table")


def decode_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a header block that uses no dynamic table entries."""
    headers: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(block)
    while pos < end:
        byte = block[pos]
        if byte & 0x80:  # indexed field
            index, pos = _decode_int(block, pos, 7)
            headers.append(_static(index))
            continue
        if byte & 0xE0 == 0x20:  # dynamic table size update (must be 0 for us)
            _, pos = _decode_int(block, pos, 5)
            continue
        prefix = 6 if byte & 0x40 else 4  # with incremental indexing / without or never
        index, pos = _decode_int(block, pos, prefix)
        if index:
            name = _static(index)[0]
        else:
            name, pos = _decode_string(block, pos)
        value, pos = _decode_string(block, pos)
        headers.append((name, value))
    return headers


def grpc_status(block: bytes) -> tuple[int, str] | None:
    """``(grpc-status, grpc-message)`` of a trailer block, or None if it carries no status."""
    headers = decode_block(block)
    status: int | None = None
    message = ""
    for name, value in headers:
        if name == b"grpc-status":
            status = int(value)
        elif name == b"grpc-message":
            message = _percent_decode(value)
    if status is None:
        # Without Huffman support: the status is the one undecodable name with a small digit value.
        for name, value in headers:
            if name == HUFFMAN_UNDECODED and value.isdigit() and len(value) <= 2:
                status = int(value)
                break
    if status is None:
        return None
    return status, message


def _percent_decode(value: bytes) -> str:
    if value == HUFFMAN_UNDECODED:
        return "(message not decoded: install the 'hpack' package)"
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == 0x25 and i + 2 < len(value):
            try:
                out.append(int(value[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(c)
        i += 1
    return out.decode(errors="replace")
