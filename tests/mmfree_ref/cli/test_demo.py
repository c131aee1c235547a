"""`mmfree demo` at toy size: every promised file, consistent with each other."""
import numpy as np

from mmfree_ref.cli.demo import PROMPTS, DemoSetup, print_summary, run_demo
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import load_packed
from mmfree_ref.quantize import absmean_ternary


def test_demo_writes_checkpoint_export_curve_and_samples(tmp_path, capsys):
    setup = DemoSetup(hidden_size=8, num_hidden_layers=1, batch_size=2, seq_len=16,
                      val_windows=4)
    s = run_demo(minutes=0.02, out=tmp_path / "demo", setup=setup, progress=False)
    out = tmp_path / "demo"
    assert {p.name for p in out.iterdir()} == {"checkpoint", "model-ternary-packed.safetensors",
                                               "loss_curve.png", "samples.txt"}
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config, params = load_checkpoint(out / "checkpoint")
    assert config.hidden_size == 8 and config.vocab_size == 258
    packed = load_packed(out / "model-ternary-packed.safetensors")
    w = params["model.layers.0.mlp.gate_proj.weight"].astype(np.float32)
    assert np.array_equal(packed.ternary["model.layers.0.mlp.gate_proj.weight"].codes(),
                          absmean_ternary(w)[0])
    samples = (out / "samples.txt").read_text()
    assert all(p in samples for p in PROMPTS)
    # the corpus's unigram entropy of bytes of English-like text lies between 2 and 5 nats
    assert 2 < s["entropy"] < 5 and np.isfinite(s["val_loss"]) and s["steps"] >= 1
    print_summary(s)
    printed = capsys.readouterr().out
    assert "unigram entropy of the corpus" in printed and "model-ternary-packed" in printed
