"""Pretraining lab: training runs on a background thread (the kernel is not blocked), the live loss curve is
the trainer's own logged loss, finished runs land in the store, Cancel stops a run cleanly (resumable)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
from workbench.dashboards import PretrainingLab, TrainingJob
from workbench.results import COLUMNS
from workbench.runs import RunStore

TINY = dict(dataset="gaussian-mixture", dataset_options={"n_train": 96, "n_test": 48, "n_ood": 48, "dim": 8},
            model="mlp", model_options={"hidden": [16]}, steps=30, batch_size=16, checkpoints=2, lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lab_trains_in_background_and_lists_the_run(tmp_path):
    store = RunStore(tmp_path)
    lab = PretrainingLab(store, TINY)
    job = lab.start(name="tiny", label_noise=0.2, seed=3)
    assert lab.wait(120) == "done", lab.status.value
    run = store.get("tiny")
    assert run.done and run.config.label_noise == 0.2 and run.config.seed == 3
    assert run.config.model_options == {"hidden": [16]} and run.config.steps == 30
    # the curve is the trainer's logged training-batch loss, step by step
    hist = run.history()
    logged = hist[(hist.measure == "loss") & (hist.split == "train_batch")]
    curve = lab.figure.data[0]
    assert list(curve.x) == logged.step.astype(float).tolist()
    np.testing.assert_allclose(curve.y, logged.value, rtol=1e-6)
    # current_frame: the live loss drawn, in the results schema
    frame = lab.current_frame()
    assert list(frame.columns) == list(COLUMNS) and set(frame.run) == {"tiny"} and set(frame.measure) == {"loss"}
    assert frame.step.tolist() == logged.step.tolist()
    np.testing.assert_allclose(frame.value, logged.value, rtol=1e-6)
    live = job.history()
    assert list(live.columns) == list(COLUMNS) and set(live.split) == {"train_batch"}
    assert lab.progress.value == 30 and lab.progress.bar_style == "success"
    assert "done" in lab.status.value and "tiny" in lab.runs_html.value
    assert lab.runs().set_index("name").loc["tiny", "state"] == "done"
    assert not lab.start_button.disabled and lab.cancel_button.disabled and lab.name_w.value == ""
    assert job.history().step.max() == 30


def test_cancel_stops_cleanly_and_resumes(tmp_path):
    store = RunStore(tmp_path)
    lab = PretrainingLab(store, TINY)
    job = lab.start(name="long", steps=3000, checkpoints=4)  # logs every 30 steps
    assert job.running  # start() returned while training goes on in its thread (3000 steps take seconds)
    for _ in range(1200):  # wait until training has logged a few steps
        if job.step >= 90 or not job.running:
            break
        time.sleep(0.025)
    lab.cancel()
    assert lab.wait(120) == "cancelled"
    assert job.step < 3000
    run = store.get("long")
    status = run.status
    assert status["state"] == "interrupted" and status["step"] == max(run.checkpoints())
    assert status["step"] == job.step  # Cancel kept every step done (a resume point), not the last checkpoint's
    assert "cancelled" in lab.status.value and lab.progress.bar_style == "warning"
    assert lab.runs().set_index("name").loc["long", "state"] == "interrupted"
    # nothing half-written: every checkpoint loads, the history reads back up to the last checkpoint
    for step in run.checkpoints():
        run.load_model(step)
    assert run.history().step.max() == status["step"]
    # a cancelled run resumes from its last checkpoint (the trainer's resume), not from step 0
    resumed = TrainingJob(run.config, store, name="long")
    resumed._cancel.set()  # stop again at the first logged step after the resume point
    resumed.start()
    assert resumed.wait(120) == "cancelled"
    first = resumed.history().step.min()
    assert first > status["step"], "the resumed job restarted from scratch"


def test_cancel_between_checkpoints_resumes_to_the_same_weights_and_history(tmp_path):
    """train()'s callback raising KeyboardInterrupt (the lab's Cancel) at step 17 of 40, between the scheduled
    checkpoints 1 and 40: the run is interrupted at 17, not at 1; resuming continues at 18 and ends with the weights,
    history and checkpoints of a run trained without the cancel (computed in another store)."""
    import torch

    from workbench.runs import RunConfig
    from workbench.train import train

    cfg = RunConfig.from_dict({**TINY, "steps": 40, "checkpoints": 2})
    straight = train(cfg, RunStore(tmp_path / "straight"), progress=False)
    store = RunStore(tmp_path / "cancelled")

    def cancel_at_17(step, _metrics):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, progress=False, callback=cancel_at_17)
    run = store.get(cfg.id)
    assert run.status["state"] == "interrupted" and run.status["step"] == 17
    assert 17 in run.checkpoints() and run.checkpoint_problem(17) is None
    assert run.history().step.max() == 17
    seen = []
    resumed = train(cfg, store, progress=False, callback=lambda step, _m: seen.append(step))
    assert seen[0] == 18 and resumed.done
    assert resumed.checkpoints() == straight.checkpoints() and 17 not in resumed.checkpoints()
    a, b = straight.load_model().state_dict(), resumed.load_model().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(resumed.history(), straight.history())
    assert store.check().empty, store.check()


def test_the_curve_of_a_resumed_run_shows_its_whole_history(tmp_path):
    """Starting an interrupted run again in the lab resumes it; the curve drawn is the run's whole training loss,
    the steps before the resume point too (the live steps alone drew it from the resume point on): step for step
    the loss of the same run trained without interruption (in another store)."""
    from workbench.train import train

    lab = PretrainingLab(RunStore(tmp_path / "lab"), TINY)
    cfg = lab.config(steps=40)
    straight = train(cfg, RunStore(tmp_path / "straight"), progress=False).history()
    want = straight[(straight.measure == "loss") & (straight.split == "train_batch")]

    def stop_at_17(step, _metrics):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, lab.store, progress=False, callback=stop_at_17)
    job = lab.start(steps=40)
    assert lab.wait(120) == "done", lab.status.value
    assert job.history().step.min() == 18  # the job itself resumed after step 17
    frame = lab.current_frame()
    assert frame.step.tolist() == want.step.tolist()
    np.testing.assert_allclose(frame.value, want.value, rtol=1e-6)
    curve = lab.figure.data[0]
    assert list(curve.x) == want.step.astype(float).tolist()


def test_invalid_choices_are_refused_by_name(tmp_path):
    lab = PretrainingLab(RunStore(tmp_path), TINY)
    with pytest.raises(ValueError, match="label_noise"):
        lab.start(objective="simclr", label_noise=0.3)
    with pytest.raises(ValueError, match="unknown choice"):
        lab.set(colour="red")
    with pytest.raises(ValueError, match="objective='nope' is not available"):
        lab.set(objective="nope")
    lab.set(objective="supervised", label_noise=0.0)
    lab.controls["objective"].value = "simclr"
    lab.controls["label_noise"].value = 0.5
    lab.start_button.click()  # the button reports instead of raising
    assert "label_noise" in lab.status.value and lab.job is None
    cfg = lab.config(model="mlp", norm="layer", augment=["noise"], temperature=0.5, label_noise=0.0)
    assert cfg.model_options["norm"] == "layer" and cfg.augment == ("noise",) and cfg.temperature == 0.5
    with pytest.raises(ValueError, match="run='nope'"):
        lab.select(run="nope")
    with pytest.raises(ValueError, match="unknown choice"):
        lab.select(colour="red")


def test_a_slider_value_is_the_value_shown(tmp_path):
    """The browser snaps a log slider to its grid (10^(k * step)) and sends that value back; the config must use
    the value the slider shows (its readout), or a run trained from code is trained again under a new id."""
    from workbench.runs import RunConfig

    lab = PretrainingLab(RunStore(tmp_path), TINY)
    snapped = 10 ** (round(np.log10(0.2) / 0.05) * 0.05)  # what the page sends back for temperature=0.2
    assert snapped != 0.2 and format(snapped, lab.controls["temperature"].readout_format) == "0.2"
    lab.controls["temperature"].value = snapped
    lab.controls["lr"].value = 10 ** (round(np.log10(3e-3) / 0.1) * 0.1)  # shown as 0.00316, not 0.003
    cfg = lab.config()
    assert cfg.temperature == 0.2
    assert cfg.lr == float(format(lab.controls["lr"].value, lab.controls["lr"].readout_format)) == 0.00316
    assert cfg.id == RunConfig.from_dict({**TINY, "temperature": 0.2, "lr": 0.00316}).id


def test_select_shows_a_stored_run_and_loads_its_choices(tmp_path):
    store = RunStore(tmp_path)
    lab = PretrainingLab(store, TINY)
    lab.start(name="first", seed=4, label_noise=0.1)
    assert lab.wait(120) == "done"
    lab.select(seed=0, label_noise=0.0)  # choices alone: the widgets change, the drawn run stays
    assert lab.controls["seed"].value == 0 and lab.config().seed == 0
    lab.select(run="first")
    assert lab.config() == store.get("first").config  # its choices are in the widgets: Start would reuse it
    hist = store.get("first").history()
    loss = hist[(hist.measure == "loss") & (hist.split == "train_batch")]
    np.testing.assert_allclose(lab.current_frame().value, loss.value)
    np.testing.assert_allclose(lab.figure.data[0].y, loss.value, rtol=1e-6)
    assert lab.plotted_data()["step"].tolist() == loss.step.astype(float).tolist()
    lab.select(run="first", steps=60)  # the run, then a choice on top of it
    assert lab.config().steps == 60 and lab.config().seed == 4
