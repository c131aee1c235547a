"""Every public function of the oracle's top level rejects a bad argument with one ValueError
whose whole text names the argument, what was expected and what came (STYLE: validation at the
boundary). The messages are compared in full, not searched for a word: a check that names the
wrong argument, reports the wrong axis or lost its text is a bug a user meets as a riddle.
"""
import re

import numpy as np
import pytest

from mmfree_ref.bitlinear import bitlinear, bitlinear_int, ternary_accumulate
from mmfree_ref.decode import decode_step, init_state
from mmfree_ref.glu import glu
from mmfree_ref.loss import cross_entropy
from mmfree_ref.mlgru import MLGRU_KEYS, mlgru_forward, mlgru_step
from mmfree_ref.model import forward
from mmfree_ref.params import init_params
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm
from mmfree_ref.scan import mlgru_scan, mlgru_scan_parallel
from mmfree_ref.config import HGRNBitConfig

I8 = np.int8
ONES_Q = np.ones((2, 3), I8)

# (id, call, the whole message)
CASES = [
    ("accumulate q float", lambda: ternary_accumulate(np.ones((2, 3)), np.ones((4, 3), I8)),
     "q must be an integer array, got dtype float64"),
    ("accumulate q list", lambda: ternary_accumulate([1, 2], np.ones((4, 3), I8)),
     "q must be a NumPy array, got list"),
    ("accumulate t 1-d", lambda: ternary_accumulate(ONES_Q, np.ones(3, I8)),
     "t must have 2 dimension(s), got shape (3,)"),
    ("accumulate t 2", lambda: ternary_accumulate(ONES_Q, np.full((4, 3), 2, I8)),
     "t has value 2 out of range: must be < 2"),
    ("accumulate t -2", lambda: ternary_accumulate(ONES_Q, np.full((4, 3), -2, I8)),
     "t has value -2 below the allowed minimum -1"),
    ("accumulate t width", lambda: ternary_accumulate(np.ones((2, 2, 3), I8), np.ones((4, 5), I8)),
     "t must have shape (d_out, 3), got (4, 5)"),
    ("bitlinear weight width",
     lambda: bitlinear(np.ones((2, 2, 3)), np.ones((4, 5)), np.ones(3)),
     "weight must have shape (d_out, 3) to match x's last axis, got (4, 5)"),
    ("bitlinear weight 1-d", lambda: bitlinear(np.ones((2, 3)), np.ones(3), np.ones(3)),
     "weight must have 2 dimension(s), got shape (3,)"),
    ("bitlinear norm width", lambda: bitlinear(np.ones((2, 3)), np.ones((4, 3)), np.ones(4)),
     "norm_weight must have trailing shape (3), got shape (4,)"),
    ("bitlinear norm 2-d", lambda: bitlinear(np.ones((2, 3)), np.ones((4, 3)), np.ones((1, 3))),
     "norm_weight must have 1 dimension(s), got shape (1, 3)"),
    ("bitlinear x int", lambda: bitlinear(np.ones((2, 3), int), np.ones((4, 3)), np.ones(3)),
     "x must be a float array (float16/32/64), got dtype int64"),
    ("bitlinear_int x NaN",
     lambda: bitlinear_int(np.full((2, 3), np.nan), np.ones((4, 3)), np.ones(3)),
     "x contains NaN or inf"),
    ("bitlinear_int weight width",
     lambda: bitlinear_int(np.ones((2, 3)), np.ones((4, 5)), np.ones(3)),
     "weight must have shape (d_out, 3) to match x's last axis, got (4, 5)"),
    ("rmsnorm weight width", lambda: rmsnorm(np.ones((2, 3)), np.ones(2), 1e-6),
     "weight must have trailing shape (3), got shape (2,)"),
    ("absmax int", lambda: absmax_int8(np.ones(3, int)),
     "x must be a float array (float16/32/64), got dtype int64"),
    ("absmean list", lambda: absmean_ternary([1.0]), "w must be a NumPy array, got list"),
    ("scan c shape", lambda: mlgru_scan(np.ones((1, 2, 3)), np.ones((1, 2, 4))),
     "c must have the shape of f (1, 2, 3), got (1, 2, 4)"),
    ("scan f 2-d", lambda: mlgru_scan(np.ones((2, 3)), np.ones((2, 3))),
     "f must have 3 dimension(s), got shape (2, 3)"),
    ("scan c 2-d", lambda: mlgru_scan(np.ones((1, 2, 3)), np.ones((2, 3))),
     "c must have 3 dimension(s), got shape (2, 3)"),
    ("scan h0 batch", lambda: mlgru_scan(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((2, 3))),
     "h0 must have trailing shape (1, 3), got shape (2, 3)"),
    ("scan h0 width", lambda: mlgru_scan(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((1, 4))),
     "h0 must have trailing shape (1, 3), got shape (1, 4)"),
    ("scan h0 3-d", lambda: mlgru_scan(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((1, 1, 3))),
     "h0 must have 2 dimension(s), got shape (1, 1, 3)"),
    ("parallel scan h0",
     lambda: mlgru_scan_parallel(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((2, 3))),
     "h0 must have trailing shape (1, 3), got shape (2, 3)"),
    ("parallel scan c shape", lambda: mlgru_scan_parallel(np.ones((1, 2, 3)), np.ones((1, 3, 3))),
     "c must have the shape of f (1, 2, 3), got (1, 3, 3)"),
    ("mlgru step x_t 3-d", lambda: mlgru_step(np.ones((1, 1, 3)), {}, np.zeros((1, 3))),
     "x_t must have 2 dimension(s), got shape (1, 1, 3)"),
    ("mlgru x 2-d", lambda: mlgru_forward(np.ones((2, 3)), {}),
     "x must have 3 dimension(s), got shape (2, 3)"),
    ("mlgru keys", lambda: mlgru_forward(np.ones((1, 2, 3)), {"i_proj.weight": 0}),
     "parameters missing: " + ", ".join(MLGRU_KEYS[1:])),
    ("mlgru lower bound",
     lambda: mlgru_forward(np.ones((1, 2, 3)), dict.fromkeys(MLGRU_KEYS), np.ones(4)),
     "lower_bound must have trailing shape (3), got shape (4,)"),
    ("glu keys", lambda: glu(np.ones((1, 2, 3)), {"gate_proj.weight": 1}),
     "parameters missing: gate_proj.norm.weight, down_proj.weight, down_proj.norm.weight"),
    ("loss logits int", lambda: cross_entropy(np.zeros((2, 3), int), np.array([0, 1])),
     "logits must be a float array (float16/32/64), got dtype int64"),
    ("loss labels shape", lambda: cross_entropy(np.zeros((2, 4, 3)), np.array([0, 1])),
     "labels must have shape (2, 4) (logits without the vocab axis), got (2,)"),
    # -1 is not the ignore index: a negative label would silently index from the end
    ("loss label -1", lambda: cross_entropy(np.zeros((2, 3)), np.array([0, -1])),
     "labels (not ignored) has value -1 below the allowed minimum 0"),
    ("loss all ignored", lambda: cross_entropy(np.zeros((2, 3)), np.array([-100, -100])),
     "labels: every label equals ignore_index, nothing to average over"),
]


def _config():
    return HGRNBitConfig(vocab_size=11, hidden_size=4, num_hidden_layers=2, intermediate_size=3)


MODEL_CASES = [
    ("ids empty", lambda c: forward(init_params(c), c, np.zeros((2, 0), int)),
     "ids must hold at least one token per sequence, got shape (2, 0)"),
    ("ids 1-d", lambda c: forward(init_params(c), c, np.array([1, 2])),
     "ids must have 2 dimension(s), got shape (2,)"),
    ("step ids 2-d", lambda c: decode_step(init_params(c), c, np.ones((1, 1), int),
                                           init_state(c, 1)),
     "ids_t must have shape (batch,), got (1, 1)"),
    ("step state count", lambda c: decode_step(init_params(c), c, np.array([1]),
                                               init_state(c, 1)[:1]),
     "state must hold 2 arrays (one per layer), got 1"),
    ("step state batch", lambda c: decode_step(init_params(c), c, np.array([1]),
                                               init_state(c, 2)),
     "state[0] must have trailing shape (1, 4), got shape (2, 4)"),
    ("step state 3-d", lambda c: decode_step(init_params(c), c, np.array([1]),
                                             [h[None] for h in init_state(c, 1)]),
     "state[0] must have 2 dimension(s), got shape (1, 1, 4)"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejections_name_the_argument(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.parametrize("call, message", [c[1:] for c in MODEL_CASES],
                         ids=[c[0] for c in MODEL_CASES])
def test_model_rejections_name_the_argument(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(_config())


def test_bad_shapes_fail_in_the_check_that_names_them():
    # the same mistakes reaching one level deeper: a 3-d x_t, a 1-d lower bound of the right
    # width but 2-d, a 3-d h0 each fail with their own name, not a broadcasting error later
    with pytest.raises(ValueError, match=r"^lower_bound must have 1 dimension\(s\), got shape "
                                         r"\(1, 3\)$"):
        mlgru_forward(np.ones((1, 2, 3)), dict.fromkeys(MLGRU_KEYS), np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"^h0 must have 2 dimension\(s\), got shape \(1, 1, 3\)$"):
        mlgru_scan_parallel(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((1, 1, 3)))
