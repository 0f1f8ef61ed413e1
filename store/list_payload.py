"""Top-N lists serialised as Redis DUMP payloads, so RESTORE writes a whole list in one step.

Redis stores a sorted set of up to 128 members as a listpack (the default of
zset-max-listpack-entries). ZADD checks every new member against every stored one, so filling
such a set is quadratic. With Redis 7.0.15, 100 members cost 190 to 1,400 µs of server time per
list, depending on the order of the scores, which was more than the rest of a refresh. RESTORE
of the same set as a listpack cost 4 µs, and 25 µs with sanitize-dump-payload set to yes.

The payload has the layout DUMP gives such a set in the RDB format of Redis 7.0 (RDB version 10):

- the object type 17 (a sorted set as a listpack) and the listpack as an RDB string;
- the RDB version, 2 bytes little-endian;
- the CRC-64 (Jones polynomial, reflected) of all bytes before it, 8 bytes little-endian.

The listpack contains member, score, member, score, ... in ascending (score, member bytes) order,
the order Redis keeps. Members that read as canonical 64-bit integers take the integer
encodings, as Redis gives them. Scores are 9-digit decimal strings, which read back as the same
float32.

Servers that reject the payload (fakeredis, Redis before 7.0) keep getting lists through ZADD,
and restore_supported() checks once per connection pool which applies.
NOTE: only Redis 7.0.15 was tested. Later releases load older RDB versions, so they should take
the payload too, and if one does not, the check sends its lists through ZADD.
"""

from __future__ import annotations

import logging
import struct
import uuid
import weakref

import numpy as np
import redis
from numba import njit

log = logging.getLogger(__name__)

RDB_VERSION = 10
RDB_TYPE_ZSET_LISTPACK = 17
# A listpack records its element count in 16 bits, and this value means "count them".
LISTPACK_UNKNOWN_COUNT = 65535
# Maximum bytes of a listpack entry whose back-length fits the two bytes this module writes.
MAX_ENTRY_BYTES = 16382


def _crc64_table() -> np.ndarray:
    polynomial = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 with its bits reversed
    table = np.zeros(256, dtype=np.uint64)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table[byte] = crc
    return table


CRC64_TABLE = _crc64_table()


@njit(cache=True, nogil=True)
def _crc64(data, table):
    """Return the CRC-64 that Redis puts at the end of a DUMP payload, of the uint8 array data."""
    crc = np.uint64(0)
    for byte in data:
        crc = table[(crc ^ np.uint64(byte)) & np.uint64(0xFF)] ^ (crc >> np.uint64(8))
    return crc


def _canonical_int(text: bytes) -> int | None:
    """Return the value of text when Redis would store it as an integer, else None."""
    if not 0 < len(text) <= 20:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    # The round trip rejects what Redis reads as a string: "+1", "01", "-0", "1_0", " 1".
    if str(value).encode() != text or not -(2**63) <= value < 2**63:
        return None
    return value


def _integer_entry(value: int) -> bytes:
    if 0 <= value <= 127:
        return bytes([value])
    if -4096 <= value <= 4095:
        unsigned = value & 0x1FFF
        return bytes([0xC0 | (unsigned >> 8), unsigned & 0xFF])
    if -(2**15) <= value < 2**15:
        return b"\xf1" + struct.pack("<h", value)
    if -(2**23) <= value < 2**23:
        return b"\xf2" + (value & 0xFFFFFF).to_bytes(3, "little")
    if -(2**31) <= value < 2**31:
        return b"\xf3" + struct.pack("<i", value)
    return b"\xf4" + struct.pack("<q", value)


def _string_entry(text: bytes) -> bytes:
    if len(text) < 64:
        return bytes([0x80 | len(text)]) + text
    if len(text) < 4096:
        return bytes([0xE0 | (len(text) >> 8), len(text) & 0xFF]) + text
    return b"\xf0" + struct.pack("<I", len(text)) + text


def listpack_entry(text: bytes) -> bytes:
    """Return one listpack entry for `text`: its encoding, its data and its back-length.

    Raises ValueError for an entry longer than MAX_ENTRY_BYTES.
    """
    value = _canonical_int(text)
    encoded = _integer_entry(value) if value is not None else _string_entry(text)
    length = len(encoded)
    if length <= 127:
        return encoded + bytes([length])
    if length <= MAX_ENTRY_BYTES:
        return encoded + bytes([length >> 7, (length & 127) | 128])
    raise ValueError(f"member: at most {MAX_ENTRY_BYTES} bytes in a listpack entry, got {length}")


def _rdb_length(length: int) -> bytes:
    if length < 64:
        return bytes([length])
    if length < 16384:
        return bytes([0x40 | (length >> 8), length & 0xFF])
    if length < 2**32:
        return b"\x80" + struct.pack(">I", length)
    return b"\x81" + struct.pack(">Q", length)


class MemberEntries:
    """The listpack entries of one snapshot's item ids, concatenated, and the ids' order as bytes.

    Built once per snapshot: a worker writes many lists against the same item ids.
    """

    def __init__(self, item_ids: np.ndarray) -> None:
        members = [str(item_id).encode() for item_id in item_ids.tolist()]
        entries = [listpack_entry(member) for member in members]
        self.offsets = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum([len(entry) for entry in entries], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(entries), dtype=np.uint8)
        # Redis orders members of equal score by their bytes.
        order = sorted(range(len(members)), key=members.__getitem__)
        self.byte_rank = np.empty(len(members), dtype=np.int64)
        self.byte_rank[order] = np.arange(len(members), dtype=np.int64)


def sorted_set_payloads(
    members: MemberEntries, list_idx: np.ndarray, list_scores: np.ndarray
) -> list[bytes]:
    """Return the DUMP payload of each row's sorted set, or b"" for a row without items.

    list_idx: int64 (users, n), item indices with -1 padding at the end of a row, distinct
    within a row. list_scores: float32 (users, n), finite where the index is not -1. Each score
    is stored as a 9-digit decimal, which reads back as the same float32.
    """
    list_idx = np.ascontiguousarray(list_idx, dtype=np.int64)
    list_scores = np.ascontiguousarray(list_scores, dtype=np.float32)
    if list_idx.shape != list_scores.shape:
        raise ValueError(f"list_idx, list_scores: must have one shape, got {list_idx.shape} and {list_scores.shape}")
    n_items = members.byte_rank.shape[0]
    if list_idx.size and not (-1 <= list_idx.min() and list_idx.max() < n_items):
        raise ValueError(f"list_idx: must be -1 or an item index below {n_items}, got {list_idx.min()} to {list_idx.max()}")
    buffer, offsets = _payloads(
        members.data, members.offsets, members.byte_rank, list_idx, list_scores, CRC64_TABLE
    )
    data = buffer.tobytes()
    bounds = offsets.tolist()
    return [data[bounds[row]:bounds[row + 1]] for row in range(list_idx.shape[0])]


# Bytes a score entry can take: a 1-byte header, "-123456789e-99" and the back-length.
_SCORE_ENTRY_BYTES = 20
# Bytes around the listpack: type, RDB length, listpack header and end, version, CRC.
_FRAME_BYTES = 1 + 9 + 6 + 1 + 2 + 8


@njit(cache=True, nogil=True)
def _scaled_digits(value, exponent):
    """Return value / 10**exponent rounded to an integer."""
    if exponent < 0:
        return np.int64(np.round(value * 10.0 ** -exponent))
    return np.int64(np.round(value / 10.0 ** exponent))


@njit(cache=True, nogil=True)
def _write_digits(text, length, value):
    """Write the decimal digits of a positive integer at text[length:] and return the new length."""
    start = length
    while value > 0:
        text[length] = 48 + value % 10
        value //= 10
        length += 1
    text[start:length] = text[start:length][::-1].copy()
    return length


@njit(cache=True, nogil=True)
def _write_score_entry(out, position, score):
    """Write a finite score as a listpack string entry "<9 digits>e<exponent>" and return its end.

    The digits are the float32 score rounded to 9 significant digits through float64, which is
    off by at most one in the last digit: close enough that strtod gives the same float32.
    """
    text = np.empty(18, np.uint8)
    length = 0
    value = np.float64(score)
    if value == 0.0:
        text[0] = 48  # "0"
        length = 1
    else:
        if value < 0.0:
            text[length] = 45  # "-"
            length += 1
            value = -value
        # log10 can land one off next to a power of ten; the checks below correct it.
        exponent = int(np.floor(np.log10(value))) - 8
        digits = _scaled_digits(value, exponent)
        if digits < 100_000_000:
            exponent -= 1
            digits = _scaled_digits(value, exponent)
        if digits >= 1_000_000_000:
            exponent += 1
            digits = _scaled_digits(value, exponent)
        while digits % 10 == 0:
            digits //= 10
            exponent += 1
        length = _write_digits(text, length, digits)
        if exponent != 0:
            text[length] = 101  # "e"
            length += 1
            if exponent < 0:
                text[length] = 45
                length += 1
                exponent = -exponent
            length = _write_digits(text, length, exponent)
    out[position] = 0x80 | length
    out[position + 1:position + 1 + length] = text[:length]
    out[position + 1 + length] = length + 1
    return position + length + 2


@njit(cache=True, nogil=True)
def _payloads(member_data, member_offsets, byte_rank, list_idx, list_scores, crc_table):
    n_users, width = list_idx.shape
    capacity = 0
    for row in range(n_users):
        for k in range(width):
            item = list_idx[row, k]
            if item >= 0:
                capacity += member_offsets[item + 1] - member_offsets[item] + _SCORE_ENTRY_BYTES
        capacity += _FRAME_BYTES
    out = np.empty(capacity, np.uint8)
    offsets = np.zeros(n_users + 1, np.int64)
    order = np.empty(width, np.int64)
    position = 0

    for row in range(n_users):
        count = 0
        while count < width and list_idx[row, count] >= 0:
            count += 1
        if count == 0:
            offsets[row + 1] = position
            continue

        # Ascending (score, member bytes), by insertion sort: rows come best first, so reversed
        # they are already in order but for runs of equal scores.
        for k in range(count):
            order[k] = count - 1 - k
        for k in range(1, count):
            current = order[k]
            j = k - 1
            while j >= 0 and (
                list_scores[row, order[j]] > list_scores[row, current]
                or (list_scores[row, order[j]] == list_scores[row, current]
                    and byte_rank[list_idx[row, order[j]]] > byte_rank[list_idx[row, current]])
            ):
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = current

        # The listpack body goes after room for the type and the longest RDB length prefix and
        # listpack header, then moves back once its length fixes the prefix's size.
        body_start = position + 16
        cursor = body_start
        for k in range(count):
            item = list_idx[row, order[k]]
            size = member_offsets[item + 1] - member_offsets[item]
            out[cursor:cursor + size] = member_data[member_offsets[item]:member_offsets[item + 1]]
            cursor += size
            cursor = _write_score_entry(out, cursor, list_scores[row, order[k]])
        body_length = cursor - body_start
        listpack_length = 6 + body_length + 1

        if listpack_length < 16384:
            prefix = 2 if listpack_length >= 64 else 1
        else:
            prefix = 5
        head = position
        out[head] = 17  # RDB_TYPE_ZSET_LISTPACK
        if prefix == 1:
            out[head + 1] = listpack_length
        elif prefix == 2:
            out[head + 1] = 0x40 | (listpack_length >> 8)
            out[head + 2] = listpack_length & 0xFF
        else:
            out[head + 1] = 0x80
            for b in range(4):
                out[head + 2 + b] = (listpack_length >> (8 * (3 - b))) & 0xFF
        listpack_start = head + 1 + prefix
        for b in range(4):
            out[listpack_start + b] = (listpack_length >> (8 * b)) & 0xFF
        entries = min(2 * count, 65535)
        out[listpack_start + 4] = entries & 0xFF
        out[listpack_start + 5] = entries >> 8
        destination = listpack_start + 6
        out[destination:destination + body_length] = out[body_start:body_start + body_length].copy()
        cursor = destination + body_length
        out[cursor] = 0xFF
        out[cursor + 1] = 10  # RDB_VERSION, little-endian
        out[cursor + 2] = 0
        cursor += 3

        crc = _crc64(out[head:cursor], crc_table)
        for b in range(8):
            out[cursor + b] = np.uint8((crc >> np.uint64(8 * b)) & np.uint64(0xFF))
        position = cursor + 8
        offsets[row + 1] = position
    return out[:position], offsets


# Whether a connection pool's server took a probe payload, keyed by the pool.
_restore_support: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def restore_supported(client: redis.Redis) -> bool:
    """Return whether the server of `client` restores these payloads, checking once per pool.

    The check restores a one-member set under a random key, reads it back and deletes it.
    """
    pool = client.connection_pool
    known = _restore_support.get(pool)
    if known is not None:
        return known

    key = f"streamrec:probe:{uuid.uuid4().hex}"
    probe = MemberEntries(np.array(["probe"]))
    try:
        payload = sorted_set_payloads(probe, np.array([[0]]), np.array([[1.5]], dtype=np.float32))[0]
        client.restore(key, 0, payload)
        # RESP3 connections reply with lists and decode_responses ones with text.
        stored = [
            (member.decode() if isinstance(member, bytes) else member, float(score))
            for member, score in client.zrange(key, 0, -1, withscores=True)
        ]
        supported = stored == [("probe", 1.5)]
        if not supported:
            log.warning("sorted sets written with ZADD, a restored probe read back wrong stored=%r", stored)
    except redis.ResponseError as exc:
        log.info("sorted sets written with ZADD, the server rejects RESTORE payloads error=%s", exc)
        supported = False
    finally:
        client.delete(key)
    _restore_support[pool] = supported
    return supported


def forget_restore_support(client: redis.Redis) -> None:
    """Drop what restore_supported() found for the pool of `client`, so it checks again."""
    _restore_support.pop(client.connection_pool, None)
