"""fpga_model/memory.py on a model small enough to count by hand (d=6, N=10, L=2, V=7, lower
bounds on). Every number below is worked out in the comments from param_shapes' list, not by
the module; the byte counts are integers, compared exactly.

Parameters: embedding 7x6 = 42; lower bounds 2x6 = 12; per layer attn_norm 6, i/f/g/o 4 x
(36 + norm 6) = 168, g_norm 6, mlp_norm 6, gate 20x6 = 120 + norm 6, down 6x10 = 60 + norm 10:
382, x2 = 764; final norm 6; head 42 + norm 6. Total 872.
Ternary: blocks 2 x (4 x 36 + 120 + 60) = 648, head 42; other floats 872 - 648 - 42 - 42 = 140.
Packed rows (ceil(d_in / 4) bytes): per layer 4 x 6 x 2 + 20 x 2 + 6 x 3 = 106, x2 = 212;
head 7 x 2 = 14.
Transformer++: 2 V d + L (4 d^2 + 3 d N + 2 d) + d = 84 + 2 (144 + 180 + 12) + 6 = 762.
"""
from mmfree_ref.config import HGRNBitConfig
from fpga_model.memory import (MemoryRow, TrainingRow, inference_rows, packed_bytes,
                               split_counts, tokens_for_vanilla_total, total, training_rows,
                               transformer_param_count)

CONFIG = HGRNBitConfig(hidden_size=6, intermediate_size=10, num_hidden_layers=2, vocab_size=7)


def test_counts_by_hand():
    assert split_counts(CONFIG) == (648, 42, 42, 140)
    assert transformer_param_count(CONFIG) == 762
    assert packed_bytes(CONFIG, include_head=False) == 212
    assert packed_bytes(CONFIG, include_head=True) == 226


def test_inference_rows_paper_convention():
    # 4-byte floats; the head stays in fp32 beside the embedding; no KV cache; state in fp16
    assert inference_rows(CONFIG, "paper") == [
        MemoryRow("ternary weights (2-bit packed)", 212, 0),
        MemoryRow("embedding + float head", 4 * (42 + 42), 4 * 2 * 7 * 6, "4-byte floats"),
        MemoryRow("layer weights in float (norms, bounds)", 4 * 140, 4 * (762 - 84),
                  "Transformer++: every layer weight is a float"),
        MemoryRow("recurrent state / KV cache", 2 * 1 * 2 * 6, 0,
                  "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"),
    ]


def test_inference_rows_fp16_convention():
    # ternary head packed with the blocks; KV cache 2 (k, v) x 2 bytes x batch 3 x L x d x seq 5
    assert inference_rows(CONFIG, "fp16", seq_len=5, batch=3) == [
        MemoryRow("ternary weights (2-bit packed)", 226, 0),
        MemoryRow("embedding + float head", 2 * 42, 2 * 2 * 7 * 6, "2-byte floats"),
        MemoryRow("layer weights in float (norms, bounds)", 2 * 140, 2 * (762 - 84),
                  "Transformer++: every layer weight is a float"),
        MemoryRow("recurrent state / KV cache", 2 * 3 * 2 * 6, 2 * 2 * 3 * 2 * 6 * 5,
                  "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"),
    ]


def test_training_rows_by_hand():
    # per token and layer: shared 9d + 3N + 2 = 86, vanilla extra 3 (5d + N) = 120,
    # Transformer++ 8d + 3N = 78; 10 tokens x 2 layers x 3 bytes = 60 bytes per element
    rows = training_rows(CONFIG, 10, act_bytes=3)
    assert rows == [
        TrainingRow("optimizer state (16 B/param)", 16 * 872, 16 * 872, 16 * 762,
                    "fp32 master, gradient, AdamW m, v"),
        TrainingRow("w_quant copies (fp32)", 0, 4 * (648 + 42), 0,
                    "vanilla keeps the dequantized weight for the backward"),
        TrainingRow("saved activations", 60 * 86, 60 * (86 + 120), 60 * 78,
                    "10 tokens, 3-byte activations"),
    ]
    assert total(rows, "fused") == 16 * 872 + 60 * 86
    assert total(rows, "vanilla") == 16 * 872 + 4 * 690 + 60 * 206


def test_tokens_for_vanilla_total_rounds_to_the_nearest_token():
    # vanilla at 0 tokens: 16 x 872 + 4 x 690 = 16712 bytes; each token adds 2 B x 2 layers x
    # 206 = 824 bytes: 7.49 tokens round to 7, 7.51 to 8, a target below the fixed part to 0
    fixed, per_token = 16712, 824
    assert tokens_for_vanilla_total(CONFIG, fixed + 7 * per_token + 400) == 7
    assert tokens_for_vanilla_total(CONFIG, fixed + 7 * per_token + 420) == 8
    assert tokens_for_vanilla_total(CONFIG, fixed - 5000) == 0
    # act_bytes is passed on: at 4 bytes a token adds 1648
    assert tokens_for_vanilla_total(CONFIG, fixed + 3 * 1648, act_bytes=4) == 3
