"""Tests of mmfree_ref/training/train.py on a toy model written here (a gained bigram softmax
model).

The toy has a weight matrix to decay, a 1-D gain not to decay and an embedding, its gradient is
checked by finite differences, and it learns a Markov chain quickly, so the loop's composition
(batch, clip, schedule, AdamW), its exact resume (in-process and after SIGKILL), the time budget,
the checks on resume and the loss curve can all be tested in a few seconds.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmfree_ref.training import corpus, optim, schedule
from mmfree_ref.training.train import (FORMAT, History, TrainSettings, load_state, save_loss_curve,
                                       save_state, train)

V, D = 11, 6                    # odd sizes on purpose
ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------- the toy model

def toy_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"emb.weight": rng.standard_normal((V, D)) * 0.5, "norm.weight": np.ones(D),
            "head.weight": rng.standard_normal((V, D)) * 0.5}


def toy_loss_and_grads(params, ids):
    """ids (B, T+1): logits[b, t] = (E[x] * g) @ W.T, mean cross-entropy with the next id."""
    x, y = ids[:, :-1], ids[:, 1:]
    E, g, W = params["emb.weight"], params["norm.weight"], params["head.weight"]
    h = E[x]                                            # (B, T, D)
    a = h * g                                           # (B, T, D)
    logits = a @ W.T                                    # (B, T, V)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    n = y.size
    loss = -np.take_along_axis(logp, y[..., None], -1).sum() / n
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, y[..., None], np.take_along_axis(dlogits, y[..., None], -1) - 1, -1)
    dlogits /= n
    da = dlogits @ W                                    # (B, T, D)
    dE = np.zeros_like(E)
    np.add.at(dE, x, da * g)
    grads = {"emb.weight": dE, "norm.weight": (da * h).sum((0, 1)),
             "head.weight": np.einsum("btv,btd->vd", dlogits, a)}
    return loss, grads


def markov_tokens(n=600, seed=1):
    """A chain where each token is mostly followed by (3 * token + 1) % V: bigram-learnable."""
    rng = np.random.default_rng(seed)
    t = [0]
    for _ in range(n - 1):
        t.append((3 * t[-1] + 1) % V if rng.random() < 0.85 else int(rng.integers(V)))
    return np.array(t, dtype=np.int32)


TOKENS = markov_tokens()
BATCHES = corpus.batch_sampler(TOKENS, 4, 9)
SETTINGS = TrainSettings(lr=0.05, warmup_ratio=0.1, weight_decay=0.1, clip=0.5)


def state_arrays(path):
    """Every array of a training-state file except the wall time, for exact comparisons."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "elapsed_s"}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_toy_gradient_matches_finite_differences():
    # The other tests lean on the toy; check its backward first (float64 central differences).
    params, ids = toy_params(), BATCHES(np.random.default_rng(3))
    _, grads = toy_loss_and_grads(params, ids)
    for name, p in params.items():
        fd = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = toy_loss_and_grads(params, ids)[0]
            p[i] = old - 1e-6
            down = toy_loss_and_grads(params, ids)[0]
            p[i] = old
            fd[i] = (up - down) / 2e-6
        # central differences: truncation h^2 f''' / 6 ~ 1e-13, rounding ~ u |f| / h = 2.7e-10
        # per evaluation (|f| ~ 2.4, u = 1.1e-16), two evaluations: 4e-9 is ~7x that rounding.
        # Measured 2026-12-02: 8.8e-10 (the bound was 1e-8).
        np.testing.assert_allclose(grads[name], fd, atol=4e-9, err_msg=name)


# ---------------------------------------------------------------------------- the loop

def test_steps_compose_batch_clip_schedule_adamw_in_order():
    steps, settings = 7, dataclasses.replace(SETTINGS, warmup_ratio=0.3, seed=5)
    result = train(toy_params(), toy_loss_and_grads, BATCHES, steps, settings, progress=False)
    # The same steps spelled out with the pieces (warm-up: int(0.3 * 7) = 2 steps).
    params, rng = toy_params(), np.random.default_rng(5)
    state = optim.adamw_init(params)
    for s in range(steps):
        loss, grads = toy_loss_and_grads(params, BATCHES(rng))
        grads, _ = optim.clip_grad_norm(grads, SETTINGS.clip)
        rate = schedule.lr(s, steps, SETTINGS.lr, 2, 0.1, True)
        optim.adamw_step(params, grads, state, rate, 0.9, 0.95, 1e-8, 0.1)
        assert result.history.loss[s] == loss and result.history.lr[s] == rate
    assert_identical({k: result.params[k] for k in params}, params)
    assert result.step == steps and result.stopped == "steps"


def test_learns_the_chain_below_the_unigram_entropy():
    val = corpus.eval_windows(markov_tokens(300, seed=2), 9)
    val_loss = lambda p: toy_loss_and_grads(p, val)[0]  # noqa: E731
    result = train(toy_params(), toy_loss_and_grads, BATCHES, 80, SETTINGS, val_loss=val_loss,
                   eval_every=20, progress=False)
    assert result.history.val_step == [20, 40, 60, 80]
    assert result.history.val_loss[-1] == val_loss(result.params)
    # unigram entropy of the chain ~ ln 11 = 2.40; the bigram optimum ~ 0.7 nats
    assert result.history.val_loss[-1] < corpus.unigram_entropy(TOKENS) - 1.0


def test_input_params_are_not_modified():
    params = toy_params()
    train(params, toy_loss_and_grads, BATCHES, 3, SETTINGS, progress=False)
    assert_identical(params, toy_params())


def test_float32_keeps_float32_throughout():
    settings = dataclasses.replace(SETTINGS, dtype="float32")
    result = train(toy_params(), toy_loss_and_grads, BATCHES, 40, settings, progress=False)
    ref = train(toy_params(), toy_loss_and_grads, BATCHES, 40, SETTINGS, progress=False)
    for k in ref.params:
        assert result.params[k].dtype == result.opt.m[k].dtype == result.opt.v[k].dtype \
            == np.float32
        # Same batches. Each of the 40 steps rounds p (|p| < 2) and its update to float32
        # (u32 = 6e-8 relative, a few roundings each); errors of random sign grow like
        # sqrt(steps): sqrt(40) * 2 * 2 * 2 u32 ~ 3e-6. Measured 2026-12-02: 5.1e-7.
        np.testing.assert_allclose(result.params[k], ref.params[k], rtol=0, atol=4e-6)
    assert np.mean(result.history.loss[-10:]) < np.mean(result.history.loss[:10]) - 0.3


def test_checkpoint_holds_the_documented_keys_and_no_temp_file(tmp_path):
    ckpt = tmp_path / "sub" / "state.npz"
    result = train(toy_params(), toy_loss_and_grads, BATCHES, 5, SETTINGS, checkpoint=ckpt,
                   checkpoint_every=2, progress=False)
    arrays = state_arrays(ckpt)
    assert str(arrays["format"]) == FORMAT and int(arrays["step"]) == 5
    assert int(arrays["total_steps"]) == 5 and int(arrays["adam/step"]) == 5
    assert json.loads(str(arrays["settings"])) == dataclasses.asdict(SETTINGS)
    for k, p in result.params.items():
        assert np.array_equal(arrays[f"param/{k}"], p)
        assert np.array_equal(arrays[f"adam/m/{k}"], result.opt.m[k])
        assert np.array_equal(arrays[f"adam/v/{k}"], result.opt.v[k])
    assert arrays["history/loss"].tolist() == result.history.loss
    assert os.listdir(ckpt.parent) == ["state.npz"]


class Interrupt(Exception):
    pass


def interrupting(after_calls):
    """The toy loss, raising Interrupt on call number after_calls + 1 (a crash inside a step)."""
    calls = [0]

    def loss_and_grads(params, ids):
        calls[0] += 1
        if calls[0] > after_calls:
            raise Interrupt
        return toy_loss_and_grads(params, ids)
    return loss_and_grads


@pytest.mark.parametrize("every, crash_after", [(1, 0), (1, 13), (3, 13), (4, 8), (5, 29)])
def test_crash_then_resume_is_bit_identical(tmp_path, every, crash_after):
    steps = 30
    train(toy_params(), toy_loss_and_grads, BATCHES, steps, SETTINGS,
          checkpoint=tmp_path / "ref.npz", checkpoint_every=steps, progress=False)
    ckpt = tmp_path / "run.npz"
    with pytest.raises(Interrupt):
        train(toy_params(), interrupting(crash_after), BATCHES, steps, SETTINGS, checkpoint=ckpt,
              checkpoint_every=every, progress=False)
    if not ckpt.exists():                         # crashed before the first checkpoint
        assert crash_after < every
        resumed = False
    else:
        assert int(load_state(ckpt)[0].step) == crash_after // every * every
        resumed = True
    train(toy_params(), toy_loss_and_grads, BATCHES, steps, SETTINGS, checkpoint=ckpt,
          checkpoint_every=every, resume=resumed, progress=False)
    assert_identical(state_arrays(ckpt), state_arrays(tmp_path / "ref.npz"))


# ---------------------------------------------------------------------------- kill -9

KILL_STEPS = 40


def _child_main(args):
    """The subprocess of the SIGKILL test: train the toy slowly, checkpointing every step."""
    ckpt, resume = args[0], args[1] == "resume"

    def slow(params, ids):
        time.sleep(0.004)                         # so a kill can land anywhere, even mid-write
        return toy_loss_and_grads(params, ids)
    train(toy_params(), slow, BATCHES, KILL_STEPS, SETTINGS, checkpoint=ckpt, checkpoint_every=1,
          resume=resume, progress=False)


def _start_child(ckpt, mode):
    code = ("import sys; from tests.mmfree_ref.training.test_train import _child_main; "
            "_child_main(sys.argv[1:])")
    return subprocess.Popen([sys.executable, "-c", code, str(ckpt), mode], cwd=ROOT)


def _kill_when_step_reaches(child, ckpt, target, jitter_s):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ckpt.exists() and load_state(ckpt)[0].step >= target:
            break
        assert child.poll() is None, "the child ended before it could be killed"
        time.sleep(0.001)
    time.sleep(jitter_s)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    step = load_state(ckpt)[0].step               # the file must still load after the kill
    assert step < KILL_STEPS, "the kill came too late to interrupt anything"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref.npz"
    train(toy_params(), toy_loss_and_grads, BATCHES, KILL_STEPS, SETTINGS, checkpoint=ref,
          checkpoint_every=1, progress=False)
    ckpt = tmp_path / "run.npz"
    _kill_when_step_reaches(_start_child(ckpt, "fresh"), ckpt, 6, 0.0023)
    _kill_when_step_reaches(_start_child(ckpt, "resume"), ckpt, 21, 0.0061)
    last = _start_child(ckpt, "resume")
    assert last.wait(timeout=60) == 0
    assert_identical(state_arrays(ckpt), state_arrays(ref))


# ---------------------------------------------------------------------------- time, checks, curve

def test_time_budget_stops_early_and_resume_finishes_identically(tmp_path):
    def slow(params, ids):
        time.sleep(0.02)
        return toy_loss_and_grads(params, ids)
    ckpt = tmp_path / "run.npz"
    first = train(toy_params(), slow, BATCHES, 50, SETTINGS, checkpoint=ckpt,
                  checkpoint_every=1000, max_minutes=0.25 / 60, progress=False)
    # 0.25 s at >= 20 ms per step: at most 13 steps, at least one (the budget is checked before)
    assert first.stopped == "time" and 1 <= first.step <= 13
    assert load_state(ckpt)[0].step == first.step          # saved although every=1000
    done = train(toy_params(), toy_loss_and_grads, BATCHES, 50, SETTINGS, checkpoint=ckpt,
                 resume=True, progress=False)
    assert done.stopped == "steps" and done.step == 50
    ref = train(toy_params(), toy_loss_and_grads, BATCHES, 50, SETTINGS, progress=False)
    assert_identical(done.params, ref.params)


def test_resume_refuses_another_run(tmp_path):
    ckpt = tmp_path / "run.npz"
    train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="run of 4 steps"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 5, SETTINGS, checkpoint=ckpt,
              resume=True, progress=False)
    with pytest.raises(ValueError, match="lr: saved 0.05, now 0.01"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, dataclasses.replace(SETTINGS, lr=0.01),
              checkpoint=ckpt, resume=True, progress=False)
    other = toy_params()
    other["head.weight"] = np.zeros((V + 1, D))
    with pytest.raises(ValueError, match="head.weight"):
        train(other, toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt, resume=True,
              progress=False)
    with pytest.raises(ValueError, match="no training checkpoint"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS,
              checkpoint=tmp_path / "none.npz", resume=True, progress=False)


def test_resume_refuses_changed_data_unless_asked(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("the first text")
    _, record = corpus.load_corpus(data)
    ckpt = tmp_path / "run.npz"
    train(toy_params(), toy_loss_and_grads, BATCHES, 6, SETTINGS, checkpoint=ckpt, data=record,
          max_minutes=0, progress=False)                       # stops at once, resumable
    assert load_state(ckpt)[3] == record
    data.write_text("the other text!")                         # replaced under the run
    _, changed = corpus.load_corpus(data)
    with pytest.raises(ValueError, match=rf"run\.npz: data file .*data\.txt changed since the run "
                                         rf"began \(sha256 .* 14 -> 15 bytes\); restore the data, "
                                         rf"or resume with allow_changed_data=True"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 6, SETTINGS, checkpoint=ckpt,
              data=changed, resume=True, progress=False)
    assert load_state(ckpt)[3] == record                       # refused: the file is untouched
    done = train(toy_params(), toy_loss_and_grads, BATCHES, 6, SETTINGS, checkpoint=ckpt,
                 data=changed, resume=True, allow_changed_data=True, progress=False)
    assert done.step == 6 and load_state(ckpt)[3] == changed   # the new record from now on


def test_resume_refuses_another_data_file_or_a_missing_record(tmp_path):
    (tmp_path / "a.txt").write_text("text a")
    (tmp_path / "b.txt").write_text("text a")                  # same bytes, another file
    _, a = corpus.load_corpus(tmp_path / "a.txt")
    _, b = corpus.load_corpus(tmp_path / "b.txt")
    ckpt = tmp_path / "run.npz"
    train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt, data=a,
          max_minutes=0, progress=False)
    with pytest.raises(ValueError, match=r"trained on data file .*a\.txt, not on data file "
                                         r".*b\.txt"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt, data=b,
              resume=True, progress=False)
    # a state file written before data records existed: no "data" key
    arrays = state_arrays(ckpt)
    del arrays["data"]
    np.savez(ckpt, **arrays, elapsed_s=np.array(0.0))
    assert load_state(ckpt)[3] is None
    with pytest.raises(ValueError, match="records no data .* cannot be ruled out"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt, data=a,
              resume=True, progress=False)
    assert train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS, checkpoint=ckpt,
                 resume=True, progress=False).step == 4        # no record either side: as before


def test_a_refused_call_creates_no_directory(tmp_path):
    with pytest.raises(ValueError, match="no training checkpoint"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS,
              checkpoint=tmp_path / "new" / "run.npz", curve=tmp_path / "plots" / "c.png",
              resume=True, progress=False)
    with pytest.raises(ValueError, match="data must be None or a record of corpus.load_corpus"):
        train(toy_params(), toy_loss_and_grads, BATCHES, 4, SETTINGS,
              checkpoint=tmp_path / "new" / "run.npz", data={"path": "x.txt"}, progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill harness forks (POSIX)")
def test_save_state_killed_at_each_step_keeps_a_loadable_state(tmp_path):
    from tests.mmfree_ref.formats.kill_steps import each_kill
    ckpt = tmp_path / "run.npz"
    first = train(toy_params(), toy_loss_and_grads, BATCHES, 3, SETTINGS, checkpoint=ckpt,
                  progress=False)
    state, *_ = load_state(ckpt)
    before = ckpt.read_bytes()
    state.step = 4

    def after_kill(k, step):
        assert load_state(ckpt)[0].step in (3, 4), step        # old or new, complete
        save_state(ckpt, state, 5, SETTINGS)                   # the next save cleans up
        assert os.listdir(tmp_path) == ["run.npz"] and load_state(ckpt)[0].step == 4
        ckpt.write_bytes(before)

    steps = each_kill(lambda: save_state(ckpt, state, 5, SETTINGS), after_kill)
    assert steps.count("write") > 10 and "replace" in steps and first.step == 3


def test_truncated_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "run.npz"
    train(toy_params(), toy_loss_and_grads, BATCHES, 2, SETTINGS, checkpoint=ckpt, progress=False)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        load_state(ckpt)
    np.savez(ckpt, x=np.zeros(3))
    with pytest.raises(ValueError, match="not an mmfree training checkpoint"):
        load_state(ckpt)


def test_diverging_loss_raises_and_keeps_the_last_checkpoint(tmp_path):
    calls = []

    def nan_at_6(params, ids):
        calls.append(1)
        loss, grads = toy_loss_and_grads(params, ids)
        return (np.nan if len(calls) == 6 else loss), grads
    ckpt = tmp_path / "run.npz"
    with pytest.raises(ValueError, match="training loss is nan at step 5"):
        train(toy_params(), nan_at_6, BATCHES, 10, SETTINGS, checkpoint=ckpt,
              checkpoint_every=2, progress=False)
    assert load_state(ckpt)[0].step == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"eval_every": 1.5}, "eval_every"), ({"max_minutes": -1}, "max_minutes"),
    ({"resume": True}, "resume=True needs")])
def test_bad_arguments(kwargs, match):
    args = {"steps": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        train(toy_params(), toy_loss_and_grads, BATCHES, progress=False, **args)


@pytest.mark.parametrize("field, value", [("dtype", "float16"), ("warmup_ratio", 1.0),
                                          ("clip", 0.0), ("beta2", 1.0)])
def test_bad_settings(field, value):
    with pytest.raises(ValueError, match=field):
        TrainSettings(**{field: value})


def test_loss_curve_png_is_written_atomically(tmp_path):
    val = corpus.eval_windows(TOKENS, 9, max_windows=5)
    png = tmp_path / "curve.png"
    train(toy_params(), toy_loss_and_grads, BATCHES, 12, SETTINGS, progress=False,
          val_loss=lambda p: toy_loss_and_grads(p, val)[0], eval_every=6, curve=png,
          curve_baseline=2.3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["curve.png"]
    # An empty history still draws (a run stopped before its first step).
    save_loss_curve(History(), tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
