"""The memory account (fpga_model/memory.py) against the paper and independent counts."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.config import HGRNBitConfig, preset
from mmfree_ref.formats.packing import pack_ternary
from mmfree_ref.params import init_params, is_ternary_weight
from fpga_model.memory import (GIB, inference_rows, tokens_for_vanilla_total, total,
                               training_rows, transformer_param_count)

tiny = st.builds(lambda d, n, layers, v: HGRNBitConfig(hidden_size=d, intermediate_size=n,
                                                       num_hidden_layers=layers, vocab_size=v),
                 st.integers(1, 24), st.integers(1, 40), st.integers(1, 2), st.integers(1, 30))


def test_paper_13b_inference_memory():
    """Section 4.5: 4.19 GB vs 48.50 GB at 13B (the 'paper' convention, in GiB)."""
    rows = inference_rows(preset("13B"), "paper")
    assert total(rows, "matmul_free") / GIB == pytest.approx(4.19, rel=0.01)
    assert total(rows, "transformer") / GIB == pytest.approx(48.50, rel=0.01)
    assert total(rows, "transformer") / total(rows, "matmul_free") > 10


def test_transformer_13b_is_llama_13b():
    """The Llama-2-13B parameter count, a number known independently of this code."""
    assert transformer_param_count(preset("13B")) == 13_015_864_320


@given(tiny)
def test_ternary_row_is_what_pack_ternary_writes(config):
    params = init_params(config, seed=0)
    packed = sum(pack_ternary(np.zeros(w.shape, np.int8)).nbytes
                 for k, w in params.items() if is_ternary_weight(k))
    rows = {r.item: r for r in inference_rows(config, "fp16")}
    assert rows["ternary weights (2-bit packed)"].matmul_free == packed
    n_params = sum(w.size for w in params.values())
    fp = sum(r.matmul_free for r in inference_rows(config, "fp16")[1:3])
    ternary = sum(w.size for k, w in params.items() if is_ternary_weight(k))
    assert fp == 2 * (n_params - ternary)                    # every other weight in fp16


@given(tiny, st.integers(0, 10_000))
def test_vanilla_minus_fused_is_the_recomputed_tensors(config, tokens):
    rows = training_rows(config, tokens)
    d, n, L = config.hidden_size, config.intermediate, config.num_hidden_layers
    ternary = sum(math.prod(s) for k, s in
                  ((k, w.shape) for k, w in init_params(config).items()) if is_ternary_weight(k))
    extra = 4 * ternary + 2 * tokens * L * 3 * (5 * d + n)
    assert total(rows, "vanilla") - total(rows, "fused") == extra


def test_fused_saving_grows_with_tokens_toward_its_limit():
    config = preset("1.3B")
    savings = [1 - total(r, "fused") / total(r, "vanilla")
               for r in (training_rows(config, t) for t in (0, 2**10, 2**14, 2**20))]
    assert all(a < b for a, b in zip(savings, savings[1:]))
    d, n = config.hidden_size, config.intermediate
    limit = 3 * (5 * d + n) / (9 * d + 3 * n + 2 + 3 * (5 * d + n))
    assert savings[-1] < limit < 0.61                    # the paper's 61% is out of reach


def test_tokens_for_vanilla_total():
    config = preset("1.3B")
    t = tokens_for_vanilla_total(config, 82e9)
    per_token = total(training_rows(config, 1), "vanilla") - total(training_rows(config, 0), "vanilla")
    assert abs(total(training_rows(config, t), "vanilla") - 82e9) <= per_token


def test_bad_convention():
    with pytest.raises(ValueError, match="convention"):
        inference_rows(preset("370M"), "bf16")
