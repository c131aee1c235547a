"""The power model: static power of the boards and cores, plus energy per byte and per operation.

    P_static = devices * static_w + core_w * cores + core_w2 * cores^2
    E_token  = P_static * t_token + 1e-12 * (8 * offchip_bytes * offchip_pj_per_bit
                                             + 8 * onchip_bytes * onchip_pj_per_bit
                                             + ternary_adds * add_pj + vector_ops * vector_pj)
    P = E_token / t_token

The static terms are fitted to the paper's Table 2 (1, 8, 16, 26 cores; calibrate.py); the
quadratic term stands for what grows faster than the core count as the fabric fills (routing,
clock tree, leakage rising with temperature), fitted, not derived. The paper's measurements
cannot fix the dynamic constants: its active and idle powers differ by < 0.1 W at one core,
so those come from vendor material (DDR4, HBM2) or are assumed (params.py says which).
"""


def static_power(p):
    """Watts the design draws whatever it does: boards plus configured cores."""
    return p.devices * p.static_w + p.core_w * p.cores + p.core_w2 * p.cores ** 2


def dynamic_energy(p, offchip_bytes, onchip_bytes, ternary_adds, vector_ops):
    """Joules of data movement and arithmetic for the given counts."""
    pj = (8 * offchip_bytes * p.offchip_pj_per_bit + 8 * onchip_bytes * p.onchip_pj_per_bit
          + ternary_adds * p.add_pj + vector_ops * p.vector_pj)
    return 1e-12 * pj
