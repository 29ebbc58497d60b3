"""Nested HEALPix indexing of unit vectors in numba (same results as cdshealpix), for inner loops."""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _spread(v):
    v = v & 0xFFFFFFFF
    v = (v | (v << 16)) & 0x0000FFFF0000FFFF
    v = (v | (v << 8)) & 0x00FF00FF00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v << 2)) & 0x3333333333333333
    v = (v | (v << 1)) & 0x5555555555555555
    return v


@numba.njit(cache=True)
def vec2pix_nest(order, x, y, z):
    """Nested pixel of a unit vector (healpix_base's loc2pix)."""
    nside = np.int64(1) << order
    phi = math.atan2(y, x)
    tt = phi * (2.0 / math.pi)
    if tt < 0.0:
        tt += 4.0
    if tt >= 4.0:
        tt -= 4.0
    za = abs(z)
    if za <= 2.0 / 3.0:
        temp1 = nside * (0.5 + tt)
        temp2 = nside * (z * 0.75)
        jp = np.int64(temp1 - temp2)
        jm = np.int64(temp1 + temp2)
        ifp = jp >> order
        ifm = jm >> order
        if ifp == ifm:
            face = ifp | 4
        elif ifp < ifm:
            face = ifp
        else:
            face = ifm + 8
        ix = jm & (nside - 1)
        iy = nside - (jp & (nside - 1)) - 1
    else:
        ntt = min(3, np.int64(tt))
        tp = tt - ntt
        s2 = x * x + y * y  # sin^2(theta): better than 1 - z near the poles
        tmp = nside * math.sqrt(3.0 * s2 / (1.0 + za))
        jp = min(np.int64(tp * tmp), nside - 1)
        jm = min(np.int64((1.0 - tp) * tmp), nside - 1)
        if z >= 0:
            face = ntt
            ix = nside - jm - 1
            iy = nside - jp - 1
        else:
            face = ntt + 8
            ix = jp
            iy = jm
    return (np.int64(face) << (2 * order)) + _spread(ix) + (_spread(iy) << 1)


@numba.njit(cache=True)
def _compress_bits(v):
    v = v & 0x5555555555555555
    v = (v | (v >> 1)) & 0x3333333333333333
    v = (v | (v >> 2)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FF
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFF
    v = (v | (v >> 16)) & 0x00000000FFFFFFFF
    return v


_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], dtype=np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], dtype=np.int64)


@numba.njit(cache=True)
def xyf2vec(x, y, face):
    """Unit vector of continuous face coordinates ``x, y`` in [0, 1] (healpix_base's xyf2loc)."""
    jr = _JRLL[face] - x - y
    if jr < 1.0:
        nr = jr
        z = 1.0 - nr * nr / 3.0
        s = nr * math.sqrt(6.0 - nr * nr) / 3.0 if nr > 0 else 0.0
    elif jr > 3.0:
        nr = 4.0 - jr
        z = nr * nr / 3.0 - 1.0
        s = nr * math.sqrt(6.0 - nr * nr) / 3.0 if nr > 0 else 0.0
    else:
        nr = 1.0
        z = (2.0 - jr) * 2.0 / 3.0
        s = math.sqrt((1.0 - z) * (1.0 + z))
    tmp = _JPLL[face] * nr + x - y
    if tmp < 0:
        tmp += 8.0
    if tmp >= 8:
        tmp -= 8.0
    phi = 0.0 if nr < 1e-15 else (0.25 * math.pi * tmp) / nr
    return s * math.cos(phi), s * math.sin(phi), z


@numba.njit(cache=True)
def boundary_vecs(order, pix, step, out):
    """Fill ``out`` (``4 * step + 1`` x 3) with a pixel's boundary, counter-clockwise from its south
    corner with ``step`` points per edge, then its centre in the last row."""
    nside = np.int64(1) << order
    face = pix >> (2 * order)
    sub = pix & ((np.int64(1) << (2 * order)) - 1)
    ix = _compress_bits(sub)
    iy = _compress_bits(sub >> 1)
    k = 0
    for e in range(4):
        for s in range(step):
            t = s / step
            if e == 0:
                dx, dy = t, 0.0
            elif e == 1:
                dx, dy = 1.0, t
            elif e == 2:
                dx, dy = 1.0 - t, 1.0
            else:
                dx, dy = 0.0, 1.0 - t
            out[k, 0], out[k, 1], out[k, 2] = xyf2vec((ix + dx) / nside, (iy + dy) / nside, face)
            k += 1
    out[k, 0], out[k, 1], out[k, 2] = xyf2vec((ix + 0.5) / nside, (iy + 0.5) / nside, face)
