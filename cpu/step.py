"""A decode step in one compiled call: CPUDecoder._forward (decoder.py) for one token of B <=
SERIAL_MAX_ROWS sequences when no site is recorded, the same kernels in the same order with
the Python between them gone (a step at 1.3B made ~290 kernel calls from Python, ~1.5 ms).

    decode_step(gemv, model, layers, h, ws, ids, logits)
        gemv    a GEMV version of gemv.KERNELS (a compile-time argument: one specialisation each)
        model   StepModel: emb (V, D), norm (D,), head (decoder.Linear), eps (rms_norm_eps)
        layers  a numba.typed.List of decoder.Layer: unboxed in ~2 us as one object, where a
                tuple of 24 layers took ~350 us a call (and a typed List inside a NamedTuple
                ~130 us: Numba types such a tuple in Python, element by element)
        h       (L, B, D) float32 the state, advanced in place
        ws      decoder.Workspace of B rows
        ids     (B,) int64 -> logits (B, V) float32
The element-wise kernels are the serial ones of decoder.SERIAL and the products the GEMV, as
_forward runs a step, so the two give the same bits (tests/cpu/test_step.py); _forward stays
the path that records sites (engine.py) and runs the prefill's chunks.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from mmfree_ref.bitlinear import BITLINEAR_EPS
from cpu.glu import glu_serial
from cpu.layout import QUARTERS
from cpu.mlgru import mlgru_chunk_serial
from cpu.quantize import rmsnorm_absmax_int8_serial, rmsnorm_serial

F32 = np.float32


class StepModel(NamedTuple):
    emb: np.ndarray      # (V, D) float32
    norm: np.ndarray     # (D,) float32
    head: object         # decoder.Linear
    eps: float           # rms_norm_eps of the blocks' norms


@njit(cache=True, error_model="numpy")
def workspace_codes(ws, n_sets, cols):
    """ws: decoder.Workspace -> views q (n_sets, M, cols) int8, qsum and sx (n_sets, M) of its
    flat buffers, each C-contiguous (shared by _forward and the compiled step)."""
    m = ws.res_norm.shape[0]
    k = n_sets * m
    return (ws.q[:k * cols].reshape((n_sets, m, cols)), ws.qsum[:k].reshape((n_sets, m)),
            ws.sx[:k].reshape((n_sets, m)))


@njit(inline="always")
def _bitlinear(gemv, lin, x, out, ws, add):
    """x (B, d_in) -> out (B, R) (+)= the BitLinears of lin (decoder._bitlinear, no sites)."""
    n_sets = lin.sw.shape[0]
    q, qsum, sx = workspace_codes(ws, n_sets, QUARTERS * lin.codes.shape[1])
    rmsnorm_absmax_int8_serial(x, lin.norm_w, BITLINEAR_EPS, q, qsum, sx,
                               np.empty((n_sets, 0, lin.d_in), F32))
    gemv(lin.codes, q, qsum, sx, lin.sw, lin.seg_rows, out, add)


@njit(inline="always")
def _layer(gemv, layer, res, h, ws, eps):
    """One layer on res (B, D) in place, h (B, D) its state (decoder._layer)."""
    rmsnorm_serial(res, layer.attn_norm, eps, ws.res_norm)
    _bitlinear(gemv, layer.ifg, ws.res_norm, ws.ifg, ws, False)
    mlgru_chunk_serial(ws.ifg, res.shape[0], layer.lb, layer.has_lb, h, layer.g_norm,
                       ws.f, ws.c, ws.hs, ws.y)
    _bitlinear(gemv, layer.o, ws.y, res, ws, True)
    rmsnorm_serial(res, layer.mlp_norm, eps, ws.res_norm)
    _bitlinear(gemv, layer.gate, ws.res_norm, ws.z, ws, False)
    glu_serial(ws.z, ws.u)
    _bitlinear(gemv, layer.down, ws.u, res, ws, True)


@njit(cache=True, error_model="numpy")
def decode_step(gemv, model, layers, h, ws, ids, logits):
    """The module docstring's step: ids (B,) -> logits (B, V); h advances by one token."""
    res = model.emb[ids]                                   # (B, D) copy
    for i in range(len(layers)):
        _layer(gemv, layers[i], res, h[i], ws, model.eps)
    rmsnorm_serial(res, model.norm, model.eps, ws.res_norm)
    _bitlinear(gemv, model.head, ws.res_norm, logits, ws, False)
