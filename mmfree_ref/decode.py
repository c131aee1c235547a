"""Token-by-token decoding with the recurrent state (reference `past_key_values` of HGRN-bit).

The state is one array per layer, the MLGRU hidden state h (B, D): O(1) memory per token,
whatever the context length. A step is the model's forward on T = 1 with the state carried
in, so decoding and the full-sequence forward are one code path.
"""
import numpy as np

from mmfree_ref._checks import float_array
from mmfree_ref.model import forward_with_cache


def init_state(config, batch, dtype=np.float64):
    """-> list of num_hidden_layers zero arrays (batch, hidden_size): the state before any token."""
    return [np.zeros((batch, config.hidden_size), dtype) for _ in range(config.num_hidden_layers)]


def decode_step(params, config, ids_t, state, quantize=True):
    """ids_t: (B,) int, state: list of L arrays (B, D) -> logits (B, V), new state."""
    ids_t = np.asarray(ids_t)
    if ids_t.ndim != 1:
        raise ValueError(f"ids_t must have shape (batch,), got {ids_t.shape}")
    if len(state) != config.num_hidden_layers:
        raise ValueError(f"state must hold {config.num_hidden_layers} arrays (one per layer), "
                         f"got {len(state)}")
    for i, h in enumerate(state):
        float_array(f"state[{i}]", h, ndim=2, shape=(len(ids_t), config.hidden_size))
    logits, new_state, _ = forward_with_cache(params, config, ids_t[:, None], state, quantize)
    return logits[:, 0], new_state


def decode_logits(params, config, ids, quantize=True):
    """ids: (B, T) int -> logits (B, T, V), computed one token at a time with the state."""
    state = init_state(config, ids.shape[0], params["model.embeddings.weight"].dtype)
    steps = []
    for t in range(ids.shape[1]):
        logits, state = decode_step(params, config, ids[:, t], state, quantize)
        steps.append(logits)
    return np.stack(steps, axis=1)
