"""CRC-32C of a file computed in pieces: google-crc32c gives each piece's CRC, and
``crc32c_combine`` joins two CRCs as if their data had been one stream.

Appending ``n`` zero bytes to a message is a linear map on its CRC register over GF(2); the
map for ``n`` bytes is built by repeated squaring of the map for one zero bit, so combining
costs O(log n) 32x32 bit-matrix products, whatever the lengths. (No maintained Python package
exposes a CRC-32C combine, which is why this is written here.)
"""

from __future__ import annotations

# CRC-32C (Castagnoli), bit-reflected polynomial.
_POLY = 0x82F63B78


def _apply(matrix: list[int], vector: int) -> int:
    out = 0
    i = 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _square(matrix: list[int]) -> list[int]:
    return [_apply(matrix, row) for row in matrix]


def _zero_bits_operator() -> list[int]:
    """The map that feeds one zero bit through the register."""
    return [_POLY] + [1 << (i - 1) for i in range(1, 32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of A + B, from crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B)."""
    if len2 <= 0:
        return crc1
    op = _square(_square(_square(_zero_bits_operator())))  # 8 zero bits: one zero byte
    while len2:
        if len2 & 1:
            crc1 = _apply(op, crc1)
        len2 >>= 1
        if len2:
            op = _square(op)
    return crc1 ^ crc2
