"""CRC-32C of a file computed in pieces: google-crc32c gives each piece's CRC, and
``crc32c_combine`` joins two CRCs as if their data had been one stream.

Appending ``n`` zero bytes to a message is a linear map on its CRC register over GF(2); the
map for ``n`` bytes is the product of the maps for the powers of two in ``n``, each the square
of the one before. Those are built once and kept, so a combine costs at most one 32x32
bit-matrix product per bit of the length. (No maintained Python package exposes a CRC-32C
combine, which is why this is written here.)
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


# _BYTE_POWERS[k] feeds 2**k zero bytes through the register; built on first use and kept, so
# that a combine applies at most one cached operator per bit of the length instead of squaring.
_BYTE_POWERS: list[list[int]] = []


def _byte_power(k: int) -> list[int]:
    if not _BYTE_POWERS:
        _BYTE_POWERS.append(_square(_square(_square(_zero_bits_operator()))))  # one zero byte
    while len(_BYTE_POWERS) <= k:
        _BYTE_POWERS.append(_square(_BYTE_POWERS[-1]))
    return _BYTE_POWERS[k]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of A + B, from crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B)."""
    k = 0
    while len2 > 0:
        if len2 & 1:
            crc1 = _apply(_byte_power(k), crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2
