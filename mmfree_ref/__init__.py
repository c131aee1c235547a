"""mmfree_ref: the NumPy oracle of the MatMul-free language model (arXiv 2406.02528).

Every other part of mmfree (GPU kernels, FPGA model, notebooks) is tested against the functions
here. float64 by default; any float dtype is accepted. Read the top level in this order; each
module is one equation or one block of the paper, forward and backward side by side:

    quantize.py     absmean ternary weights, absmax int8 activations (section 3.1)
    rmsnorm.py      RMSNorm, BitLinear's own normalisation
    bitlinear.py    BitLinear: norm, quantize, the ternary product as additions (section 3.1)
    activations.py  sigmoid and SiLU with their derivatives
    scan.py         the recurrence h_t = f_t h_{t-1} + c_t, sequential and parallel
    mlgru.py        the MLGRU token mixer (section 3.2)
    glu.py          the GLU channel mixer (section 3.3)
    loss.py         cross-entropy with an ignore index
    config.py       HGRNBitConfig, the checkpoints' config.json
    params.py       parameter names and shapes, as in the reference checkpoints
    model.py        the whole LM: forward, loss and hand-written backward
    decode.py       token-by-token decoding with the recurrent state

Around the oracle, one concern per subpackage (none of them is needed to read the above):

    formats/        safetensors, reference checkpoints, the packed 2-bit format, atomic writes
    training/       the training loop, AdamW, schedule, byte corpus and tokenizer
    generation/     sampling and streaming generation
    cli/            the `mmfree` command and the demo
    bitplane/       the bit-plane study of int8 activations
    exercises/      the classroom graders (need hypothesis: the `notebooks` extra)

mmfree_ref imports neither gpu/ nor fpga_model/: dependencies point one way.
"""
