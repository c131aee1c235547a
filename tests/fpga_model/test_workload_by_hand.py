"""The operators of a token step (fpga_model/workload.py), listed by hand for small models."""
from mmfree_ref.config import HGRNBitConfig
from fpga_model.workload import onchip_state_bytes, token_ops

# d = 4, N = 6, L = 2, V = 5: the GLU width differs from d, so an instruction over the wrong one
# of them shows
CONFIG = HGRNBitConfig(vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=2)


def test_every_operator_s_unit():
    """NORM for the RMSNorms (a BitLinear's own with its activation quantizer), TMATMUL for the
    ternary matrices, ROW for the element-wise work, LDST for the embedding row."""
    units = {op.name: op.unit for op in token_ops(CONFIG)}
    bitlinears = ("attn.i_proj", "attn.f_proj", "attn.g_proj", "attn.o_proj", "mlp.gate_proj",
                  "mlp.down_proj", "lm_head")
    want = {"embed": "LDST", "attn_norm": "NORM", "attn.gates+recurrence": "ROW",
            "attn.g_norm*silu(h)": "NORM", "attn.residual": "ROW", "mlp_norm": "NORM",
            "mlp.silu(gate)*u": "ROW", "mlp.residual": "ROW", "norm": "NORM", "argmax": "ROW"}
    for name in bitlinears:
        want[name] = "TMATMUL"
        want[f"{name}.norm+quant"] = "NORM"
    assert units == want


def test_gates_without_the_lower_bound():
    """f = sigmoid(f) alone: the lower bound's multiply and add (lb + (1 - lb) sigmoid) go."""
    gates = {op.name: op for op in token_ops(CONFIG)}["attn.gates+recurrence"]
    assert gates.instrs == (("sig", 4), ("mul", 4), ("add", 4), ("sig", 4), ("mul", 4),
                            ("sub", 4), ("mul", 4), ("mul", 4), ("add", 4))
    plain = {op.name: op for op in token_ops(HGRNBitConfig(
        vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=2,
        use_lower_bound=False))}["attn.gates+recurrence"]
    assert plain.instrs == (("sig", 4), ("sig", 4), ("mul", 4), ("sub", 4), ("mul", 4),
                            ("mul", 4), ("add", 4))


def test_onchip_state_bytes_by_hand():
    """Per layer: 8 norm weights of d (attn, i, f, g, o, g_norm, mlp, gate), the down norm of N,
    the state h of d, the lower bounds of d: 8 * 4 + 6 + 4 + 4 = 46 values; two layers and the
    final and head norms (2 d = 8): 100 values, 200 bytes at 16 bits."""
    assert onchip_state_bytes(CONFIG) == 200
    assert onchip_state_bytes(CONFIG, bytes_per_value=1) == 100
    no_lb = HGRNBitConfig(vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=2,
                          use_lower_bound=False)
    assert onchip_state_bytes(no_lb) == 2 * (2 * 42 + 8)
