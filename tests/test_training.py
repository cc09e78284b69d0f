"""`lgdram train`: outputs, metadata, determinism, annotations, HDF5 mode, model variants,
exact resume (also after Ctrl-C), divergence, and `lgdram bench train`.

Every run is tiny (RAM with hidden 32, 3 glimpses, batch 4 × 2 replicas, 20 test canvases);
the shared run of `conftest.trained` is reused wherever a test only reads it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers import (
    interrupt_when,
    TINY_MODEL,
    assert_one_line_error,
    assert_same_tensors,
    checkpoint_metadata,
    checkpoint_tensors,
    leftovers,
    read_jsonl,
    run_cli,
    run_main,
    tiny_train_args,
)
from lgdram_cli.training import checkpoint as ckpt


def train_main(capsys, out: Path, *extra: str, **kw) -> tuple[int, str, str]:
    """A tiny `lgdram train` in-process (faster than a subprocess): (exit code, stdout, stderr)."""
    return run_main(tiny_train_args(out, *extra, **kw), capsys)


def trained_ok(capsys, out: Path, *extra: str, **kw) -> str:
    code, _, err = train_main(capsys, out, *extra, **kw)
    assert code == 0, err
    return err


def spec_of(path: Path) -> dict:
    return json.loads(checkpoint_metadata(path)["lgdram.spec"])


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory) -> dict[str, Path]:
    """train.h5 / test.h5 (60×60 grey, 40 canvases, 100% annotated) and two mismatching files."""
    from lgdram_cli.cli.app import main

    root = tmp_path_factory.mktemp("h5")
    files = {
        "train": (root / "train.h5", ["--split", "train"]),
        "test": (root / "test.h5", ["--split", "test"]),
        "small": (root / "small40.h5", ["--set", "canvas=40"]),
        "colour": (root / "colour.h5", ["--set", "colour=true"]),
    }
    for path, extra in files.values():
        args = ["gen-data", "--dataset", "cmnist-60", "--set", "digits=mnist-mini", "--n", "40", *extra, "--out", str(path)]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code in (0, None)
    return {k: v[0] for k, v in files.items()}


# ---------------------------------------------------------------- outputs of a run


def test_train_writes_checkpoint_optimizer_and_metrics(tiny_run):
    folder = tiny_run.parent
    assert {"run.safetensors", "run.optim.safetensors", "run.metrics.jsonl"} <= set(leftovers(folder))
    assert not [f for f in leftovers(folder) if f.startswith(".")], "temp files left behind"
    records = read_jsonl(folder / "run.metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]  # --eval-every 3 --steps 6
    assert train and train[-1]["step"] == 6  # the last step is always logged
    for record in train:
        for key in ("loss/total", "loss/classification", "loss/reinforce", "loss/location",
                    "reinforce/reward", "lr", "gamma", "images_per_s"):
            assert key in record, key
        assert record["lr"] == pytest.approx(1e-3)
        assert record["gamma"] == pytest.approx(1.0)
        assert record["images_per_s"] > 0
        terms = sum(record[f"loss/{k}"] for k in ("classification", "reinforce", "location"))
        assert record["loss/total"] == pytest.approx(terms, rel=1e-5, abs=1e-6)
    for record in evals:
        assert record["n"] == 20
        assert 0 <= record["accuracy"] <= 1
        assert record["location_error_px"] >= 0
        assert isinstance(record["steps_to"], dict)
        assert len(record["per_glimpse_accuracy"]) == 3


def test_checkpoint_metadata_holds_the_resolved_spec(tiny_run):
    meta = checkpoint_metadata(tiny_run)
    assert meta["lgdram.format_version"] == str(ckpt.FORMAT_VERSION)
    assert meta["lgdram.step"] == "6"
    spec = json.loads(meta["lgdram.spec"])
    # model defaults filled in, overrides applied
    assert spec["model"] == {
        "type": "ram", "glimpses": 3, "hidden": 32, "glimpse_hidden": 16, "glimpse_size": 12, "scales": 3,
        "scale_factor": 2, "loc_std": 0.11, "sensor": "fc", "core": "lstm", "start": "centre", "glimpse_combine": "sum", "loc_range": 1.0,
    }
    # every loss term with its defaults
    assert set(spec["loss"]) == {"classification", "reinforce", "location"}
    assert spec["loss"]["location"]["gamma_start"] == 1.0 and spec["loss"]["location"]["weight"] == 1.0
    assert spec["loss"]["location"]["normalize"] == "batch"  # the seed's rule
    assert spec["loss"]["reinforce"]["baseline_weight"] == 1.0
    assert spec["dataset"]["type"] == "cmnist" and spec["dataset"]["canvas"] == [60, 60]
    assert spec["dataset"]["digits"] == "mnist-mini"
    assert spec["optim"]["lr"] == 1e-3 and spec["steps"] == 6 and spec["seed"] == 0
    assert (spec["batch_size"], spec["mc"], spec["eval_n"], spec["eval_every"]) == (4, 2, 20, 3)
    metrics = json.loads(meta["lgdram.metrics"])
    assert metrics["step"] == 6 and metrics["n"] == 20 and "accuracy" in metrics
    last_eval = [r for r in read_jsonl(ckpt.metrics_path(tiny_run)) if r["kind"] == "eval"][-1]
    assert metrics["accuracy"] == last_eval["accuracy"]
    assert meta["lgdram.tensors_sha256"] == ckpt.tensor_digest(checkpoint_tensors(tiny_run))
    assert meta["lgdram.sha256"] == ckpt.metadata_digest(meta)
    optim_meta = checkpoint_metadata(ckpt.optim_path(tiny_run))
    assert optim_meta["lgdram.step"] == "6"


def test_checkpoint_records_the_digit_source_actually_used(tmp_path, capsys):
    """Offline, `digits = mnist` falls back to the bundled mnist-mini: the checkpoint says so."""
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(
        ["train", "--out", str(out), "--dataset", "cmnist-60", *TINY_MODEL, "--batch-size", "2", "--mc", "2",
         "--eval-n", "10", "--steps", "1", "--threads", "1"],
        capsys,
    )
    assert code == 0, err
    assert "mnist-mini" in err  # the fallback is announced
    assert spec_of(out)["dataset"]["digits"] == "mnist-mini"


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_run, tmp_path, capsys):
    same = tmp_path / "same.safetensors"
    other = tmp_path / "other.safetensors"
    trained_ok(capsys, same)  # the arguments of the shared run, in-process this time
    trained_ok(capsys, other, "--seed", "1")
    assert_same_tensors(checkpoint_tensors(tiny_run), checkpoint_tensors(same))
    assert checkpoint_metadata(tiny_run)["lgdram.tensors_sha256"] == checkpoint_metadata(same)["lgdram.tensors_sha256"]
    # two runs, each with its own run id: the digest over tensors and metadata tells them apart
    assert checkpoint_metadata(tiny_run)["lgdram.sha256"] != checkpoint_metadata(same)["lgdram.sha256"]
    a, b = checkpoint_tensors(tiny_run), checkpoint_tensors(other)
    import torch

    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_train_json_prints_the_final_metrics(tmp_path, capsys):
    code, stdout, err = train_main(capsys, tmp_path / "run.safetensors", "--json", steps=2, eval_every=0)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["step"] == 2 and result["n"] == 20 and "accuracy" in result and "steps_to" in result


def test_existing_out_needs_resume_or_force(tiny_run, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    shutil.copy(tiny_run, out)
    before = out.read_bytes()
    code, _, err = train_main(capsys, out)
    assert_one_line_error(code, err, "already exists", "--resume", "--force")
    assert out.read_bytes() == before
    code, _, err = train_main(capsys, out, "--force", steps=1)
    assert code == 0, err
    assert checkpoint_metadata(out)["lgdram.step"] == "1"


def test_out_must_be_a_safetensors_name(tmp_path, capsys):
    code, _, err = train_main(capsys, tmp_path / "run.pt")
    assert_one_line_error(code, err, "safetensors")
    assert leftovers(tmp_path) == []


def test_steps_zero_writes_an_untrained_checkpoint(tmp_path, capsys):
    """`--steps 0` (allowed by the spec) evaluates and says 'saved …': the file must exist."""
    out = tmp_path / "run.safetensors"
    code, _, err = train_main(capsys, out, steps=0, eval_every=0)
    assert code == 0, err
    assert out.is_file(), f"'{err.strip().splitlines()[-1]}' but no checkpoint was written"
    assert checkpoint_metadata(out)["lgdram.step"] == "0"


# ---------------------------------------------------------------- annotations


def test_annotations_share_parsed(tmp_path, capsys):
    from lgdram_cli.cli.train_cmd import train_spec

    assert train_spec(dataset="cmnist-60", annotations="1%").annotations == pytest.approx(0.01)
    assert train_spec(dataset="cmnist-60", annotations="0.5 %").annotations == pytest.approx(0.005)
    assert train_spec(dataset="cmnist-60", annotations="100%").annotations == 1.0
    assert train_spec(dataset="cmnist-60", annotations="0%").annotations == 0.0


def test_annotations_zero_means_plain_rl(tmp_path, capsys):
    """The help says '0 = plain RL': a bare 0 needs no dataset size."""
    out = tmp_path / "run.safetensors"
    code, _, err = train_main(capsys, out, "--annotations", "0", steps=1, eval_every=0)
    assert code == 0, err
    assert spec_of(out)["annotations"] == 0.0


@pytest.mark.parametrize(
    ("value", "needle"),
    [("150%", "between 0% and 100%"), ("lots", "share"), ("-1%", "share"), ("1.5", "count")],
)
def test_bad_annotations_are_one_line_errors(tmp_path, capsys, value, needle):
    code, _, err = train_main(capsys, tmp_path / "run.safetensors", "--annotations", value)
    assert_one_line_error(code, err, needle)
    assert leftovers(tmp_path) == []


def test_annotations_count_with_a_data_file(h5_files, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(
        ["train", "--out", str(out), "--data", str(h5_files["train"]), *TINY_MODEL, "--annotations", "10",
         "--batch-size", "4", "--mc", "2", "--eval-n", "20", "--steps", "2", "--threads", "1"],
        capsys,
    )
    assert code == 0, err
    spec = spec_of(out)
    assert (spec["annotations"], spec["annotation_pool"]) == (0.0, 10)  # 10 of the file's 40 images
    assert spec["data"] == str(h5_files["train"])
    assert spec["dataset"]["type"] == "cmnist" and spec["dataset"]["canvas"] == [60, 60]  # from the file
    code, _, err = run_main(
        ["train", "--out", str(tmp_path / "more.safetensors"), "--data", str(h5_files["train"]), *TINY_MODEL,
         "--annotations", "41", "--steps", "1"],
        capsys,
    )
    assert_one_line_error(code, err, "41", "40")


# ---------------------------------------------------------------- HDF5 mode


def test_train_and_test_on_hdf5_files(h5_files, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(
        ["train", "--out", str(out), "--data", str(h5_files["train"]), "--test-data", str(h5_files["test"]),
         *TINY_MODEL, "--batch-size", "4", "--mc", "2", "--eval-n", "15", "--steps", "3", "--threads", "1"],
        capsys,
    )
    assert code == 0, err
    meta = checkpoint_metadata(out)
    assert meta["lgdram.step"] == "3"
    assert json.loads(meta["lgdram.metrics"])["n"] == 15  # the first 15 canvases of test.h5
    assert spec_of(out)["test_data"] == str(h5_files["test"])


@pytest.mark.parametrize(("which", "needle"), [("small", "40x40"), ("colour", "3-channel")])
def test_hdf5_that_does_not_fit_the_dataset_is_refused(h5_files, tmp_path, capsys, which, needle):
    for option in ("--data", "--test-data"):
        out = tmp_path / "run.safetensors"
        code, _, err = train_main(capsys, out, option, str(h5_files[which]))
        assert_one_line_error(code, err, needle)
        assert not out.exists()
        assert leftovers(tmp_path) == [], leftovers(tmp_path)


# ---------------------------------------------------------------- spec, schema, model variants


def test_schema_train_lists_model_and_loss_alternatives():
    result = run_cli("schema", "train")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    props = schema["properties"]
    types = {m["properties"]["type"]["default"] for m in props["model"]["oneOf"]}
    assert {"ram", "dram", "fc", "cnn"} <= types
    assert {"classification", "reinforce", "location", "rloo"} <= set(props["loss"]["properties"])
    assert {"steps", "batch_size", "mc", "seed", "annotations", "optim"} <= set(props)


@pytest.mark.parametrize(
    ("model", "check"),
    [
        (("--model", "ram", "--set", "model.core=rnn", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
          "--set", "model.glimpses=2"), {"type": "ram", "core": "rnn"}),
        (("--model", "ram", "--set", "model.core=gru", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
          "--set", "model.glimpses=2"), {"type": "ram", "core": "gru"}),
        (("--model", "dram", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8", "--set", "model.glimpses=2"),
         {"type": "dram"}),
        (("--model", "ram", "--set", "model.sensor=conv", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
          "--set", "model.glimpses=2"), {"sensor": "conv"}),
    ],
    ids=["ram-rnn", "ram-gru", "dram", "ram-conv-sensor"],
)
def test_model_variants_train(tmp_path, capsys, model, check):
    out = tmp_path / "run.safetensors"
    code, _, err = train_main(capsys, out, steps=2, eval_every=0, model=model)
    assert code == 0, err
    spec = spec_of(out)
    for key, value in check.items():
        assert spec["model"][key] == value
    assert checkpoint_metadata(out)["lgdram.step"] == "2"


def test_fc_baseline_trains_with_the_classification_loss(trained):
    out = trained("fc")
    spec = spec_of(out)
    assert spec["model"]["type"] == "fc" and set(spec["loss"]) == {"classification"}
    evals = [r for r in read_jsonl(ckpt.metrics_path(out)) if r["kind"] == "eval"]
    assert evals and "location_error_px" not in evals[-1]


def test_a_batch_too_large_for_the_retina_stops_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import lgdram_cli.models.retina as retina_module

    # room for the 2-image probe, not for a 4-image training batch (instead of 2**31 floats)
    monkeypatch.setattr(retina_module, "MAX_CELLS", 30_000)
    code, _, err = train_main(capsys, tmp_path / "run.safetensors")
    last = err.strip().splitlines()[-1]  # after the resolved-spec line every run prints first
    assert code == 2 and last.startswith("error:") and "--batch-size" in last, err
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []  # no checkpoint, no metrics file


def test_fc_baseline_trains_with_the_default_loss(tmp_path, capsys):
    """`--model fc` is offered by `train --help`; with the default (attention) loss terms it
    must still train, or be refused before anything is written."""
    out = tmp_path / "run.safetensors"
    code, _, err = train_main(capsys, out, steps=2, eval_every=0, model=("--model", "fc", "--set", "model.width=16"))
    if code != 0:
        last = err.strip().splitlines()[-1]
        pytest.fail(
            f"--model fc with the default loss: exit {code}, '{last}' "
            f"({len(err.strip().splitlines())} stderr lines; left behind: {leftovers(tmp_path)})"
        )
    # a whole-image model makes no glimpse decisions: the default loss reduces to classification
    assert list(spec_of(out)["loss"]) == ["classification"]
    assert spec_of(out)["model"]["type"] == "fc"


def test_set_model_field_without_model_option(tmp_path, capsys):
    """`--set model.core=rnn` (the example in `train --help`) must override the default model's
    field, not replace the model section by one without a type."""
    out = tmp_path / "run.safetensors"
    model = ("--set", "model.core=rnn", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
             "--set", "model.glimpses=2")
    code, _, err = train_main(capsys, out, steps=1, eval_every=0, model=model)
    assert code == 0, err
    assert spec_of(out)["model"]["type"] == "ram" and spec_of(out)["model"]["core"] == "rnn"


def test_set_one_loss_weight_keeps_the_other_terms():
    """`--set loss.location.weight=2` changes one value; the hybrid loss keeps its other terms."""
    from lgdram_cli.cli.train_cmd import train_spec

    spec = train_spec(dataset="cmnist-60", sets=["loss.location.weight=2"])
    assert set(spec.loss) == {"classification", "reinforce", "location"}, spec.loss
    assert spec.loss["location"]["weight"] == 2


def test_rloo_needs_two_replicas(tmp_path, capsys):
    code, _, err = train_main(capsys, tmp_path / "run.safetensors", "--set", "loss.rloo.weight=1", "--mc", "1")
    assert_one_line_error(code, err, "rloo", "--mc 2")
    assert leftovers(tmp_path) == []


def test_rloo_trains_with_two_replicas(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    spec_file = tmp_path / "rloo.json"
    spec_file.write_text(json.dumps({"loss": {"classification": {}, "rloo": {}, "location": {}}}))
    code, _, err = train_main(capsys, out, "--spec", str(spec_file), steps=2, eval_every=0)
    assert code == 0, err
    assert set(spec_of(out)["loss"]) == {"classification", "rloo", "location"}
    train = [r for r in read_jsonl(ckpt.metrics_path(out)) if r["kind"] == "train"]
    assert "rloo/reward" in train[-1] and "loss/rloo" in train[-1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--steps", "-1"), "--steps"),
        (("--batch-size", "0"), "--batch-size"),
        (("--mc", "0"), "--mc"),
        (("--set", "model.glimpses=0"), "glimpses"),
        (("--set", "optim.lr=0"), "lr"),
        (("--model", "nosuchmodel"), "nosuchmodel"),
    ],
)
def test_bad_train_options_are_one_line_errors(tmp_path, capsys, args, needle):
    code, _, err = train_main(capsys, tmp_path / "run.safetensors", *args)
    assert_one_line_error(code, err, needle)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- exact resume


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, capsys):
    straight = tmp_path / "a" / "run.safetensors"
    resumed = tmp_path / "b" / "run.safetensors"
    straight.parent.mkdir()
    resumed.parent.mkdir()
    trained_ok(capsys, straight, steps=8, eval_every=3)
    trained_ok(capsys, resumed, steps=4, eval_every=3)
    first_leg = read_jsonl(ckpt.metrics_path(resumed))
    err = trained_ok(capsys, resumed, "--resume", steps=8, eval_every=3)
    assert "resuming" in err and "step 4" in err
    assert checkpoint_metadata(resumed)["lgdram.step"] == "8"
    assert_same_tensors(checkpoint_tensors(straight), checkpoint_tensors(resumed))
    assert_same_tensors(checkpoint_tensors(ckpt.optim_path(straight)), checkpoint_tensors(ckpt.optim_path(resumed)))
    records = read_jsonl(ckpt.metrics_path(resumed))
    assert records[: len(first_leg)] == first_leg  # resuming appends to the metrics file
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 4, 6, 8]


@pytest.mark.parametrize(
    "variant",
    ["annotated-50%", "dram", "hdf5", "rnn-core"],
)
def test_resume_is_exact_for_other_set_ups(h5_files, tmp_path, capsys, variant):
    """The same equivalence with the location loss active, DRAM, the HDF5 feed, an RNN core."""
    small = ("--set", "model.hidden=16", "--set", "model.glimpse_hidden=8", "--set", "model.glimpses=2")
    extra, model = {
        "annotated-50%": (("--annotations", "50%"), TINY_MODEL),
        "dram": ((), ("--model", "dram", *small)),
        "hdf5": (("--data", str(h5_files["train"]), "--annotations", "20"), ("--model", "ram", *small)),
        "rnn-core": ((), ("--model", "ram", "--set", "model.core=rnn", *small)),
    }[variant]
    straight = tmp_path / "a" / "run.safetensors"
    resumed = tmp_path / "b" / "run.safetensors"
    straight.parent.mkdir()
    resumed.parent.mkdir()
    trained_ok(capsys, straight, *extra, steps=6, eval_every=0, model=model)
    trained_ok(capsys, resumed, *extra, steps=3, eval_every=0, model=model)
    trained_ok(capsys, resumed, *extra, "--resume", steps=6, eval_every=0, model=model)
    assert_same_tensors(checkpoint_tensors(straight), checkpoint_tensors(resumed))
    if variant == "annotated-50%":
        train = [r for r in read_jsonl(ckpt.metrics_path(resumed)) if r["kind"] == "train"]
        assert any(r["location/annotated"] > 0 for r in train)


def test_resume_below_the_checkpoint_step_is_refused(tiny_run, tmp_path, capsys):
    """Checkpoint at step 6, `--resume --steps 3`: nothing to do that makes sense."""
    out = tmp_path / "run.safetensors"
    for src in (tiny_run, ckpt.optim_path(tiny_run), ckpt.metrics_path(tiny_run)):
        shutil.copy(src, tmp_path / src.name)
    before = out.read_bytes()
    code, _, err = train_main(capsys, out, "--resume", steps=3)
    assert_one_line_error(code, err, "step 6")
    assert out.read_bytes() == before


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_exactly(tmp_path):
    out = tmp_path / "run.safetensors"
    code, stderr = interrupt_when(tiny_train_args(out, steps=2000, eval_every=5), started=out.exists)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    m = re.search(r"interrupted: saved .* at step (\d+)", stderr)
    assert m, stderr
    step = int(m.group(1))
    assert 5 <= step < 2000
    assert checkpoint_metadata(out)["lgdram.step"] == str(step)
    assert checkpoint_metadata(ckpt.optim_path(out))["lgdram.step"] == str(step)
    assert not [f for f in leftovers(tmp_path) if f.startswith(".")], leftovers(tmp_path)
    ckpt.load_checkpoint(out)  # valid, digest included

    result = run_cli(*tiny_train_args(out, "--resume", steps=step + 2, eval_every=5))
    assert result.returncode == 0, result.stderr
    assert checkpoint_metadata(out)["lgdram.step"] == str(step + 2)
    straight = tmp_path / "straight.safetensors"
    result = run_cli(*tiny_train_args(straight, steps=step + 2, eval_every=5))
    assert result.returncode == 0, result.stderr
    assert_same_tensors(checkpoint_tensors(straight), checkpoint_tensors(out))


# ---------------------------------------------------------------- divergence


def diverge(capsys, out: Path) -> tuple[int, str]:
    """lr 1e30: the first update blows the weights up, the next loss is not finite."""
    code, _, err = train_main(capsys, out, "--set", "optim.lr=1e30", steps=6, eval_every=1)
    return code, err


def test_divergence_exits_1_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, err = diverge(capsys, out)
    assert code == 1, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error:"), err
    m = re.search(r"diverged at step (\d+)", last)
    assert m, last
    step = int(m.group(1))
    assert step >= 1
    # every step was checkpointed (--eval-every 1): the last good one is the step before
    assert checkpoint_metadata(out)["lgdram.step"] == str(step)
    ckpt.load_checkpoint(out)  # intact: readable, digest matches
    assert checkpoint_metadata(ckpt.optim_path(out))["lgdram.step"] == str(step)
    assert not [f for f in leftovers(tmp_path) if f.startswith(".")]


def test_divergence_message_is_the_only_stderr_noise(tmp_path):
    """No torch-internal warning ('Converting a tensor with requires_grad=True to a scalar')
    around the divergence error (a subprocess: in-process, pytest captures warnings)."""
    out = tmp_path / "run.safetensors"
    result = run_cli(*tiny_train_args(out, "--set", "optim.lr=1e30", steps=6, eval_every=1))
    assert result.returncode == 1, result.stderr
    assert "requires_grad" not in result.stderr, result.stderr


# ---------------------------------------------------------------- schedules and thresholds


def test_learning_rate_schedule_and_steps_to(tmp_path):
    from lgdram_cli.training.loop import MetricsLog, learning_rate
    from lgdram_cli.training.spec import TrainSpec

    spec = TrainSpec(optim={"lr": 1e-2, "lr_decay": 0.5, "decay_every": 10, "lr_min": 2e-3})
    assert [learning_rate(spec, s) for s in (0, 9, 10, 25, 1000)] == pytest.approx([1e-2, 1e-2, 5e-3, 2.5e-3, 2e-3])
    path = tmp_path / "run.metrics.jsonl"
    log = MetricsLog(path, resume_step=None, enabled=True)
    log.eval(10, {"accuracy": 0.6})
    log.eval(20, {"accuracy": 0.4})
    log.eval(30, {"accuracy": 0.95})
    assert read_jsonl(path)[-1]["steps_to"] == {"50%": 10, "80%": 30, "90%": 30}
    again = MetricsLog(path, resume_step=30, enabled=True)  # a resumed run remembers them
    assert again.reached == {"50%": 10, "80%": 30, "90%": 30}
    assert len(read_jsonl(path)) == 3
    # resuming from an older checkpoint (step 20) drops what came after it, thresholds included
    older = MetricsLog(path, resume_step=20, enabled=True)
    assert older.reached == {"50%": 10} and [r["step"] for r in read_jsonl(path)] == [10, 20]
    MetricsLog(tmp_path / "other.jsonl", resume_step=None, enabled=False).eval(1, {"accuracy": 1.0})
    assert not (tmp_path / "other.jsonl").exists()  # ranks other than 0 write nothing


# ---------------------------------------------------------------- bench train


def test_bench_train_json(capsys):
    code, stdout, err = run_main(
        ["bench", "train", "--steps", "3", "--warmup", "1", "--json", "--mc", "2", "--batch-size", "2",
         "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8", "--threads", "1"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["ms_per_step"] > 0 and result["ms_per_step_best"] <= result["ms_per_step"]
    assert result["images_per_s"] == pytest.approx(2 * 2 / (result["ms_per_step"] / 1000))
    assert result["mc"] == 2 and result["batch_size"] == 2 and result["threads"] == 1
    assert result["model"]["hidden"] == 16
    # RAM computes the first glimpse once per image, not once per replica: less work than nominal
    assert 0 < result["gflop_per_step"] < result["gflop_per_step_nominal"]


def test_fused_loop_executes_the_nominal_flops_without_replicas():
    """The fused loop does the plain model's arithmetic: with one replica, the same FLOP count."""
    from lgdram_cli.cli.train_cmd import train_spec
    from lgdram_cli.training.benchmark import nominal_step_flops, step_flops
    from lgdram_cli.training.feed import OnTheFlyFeed
    from lgdram_cli.training.loop import build

    spec = train_spec(dataset="cmnist-60", model="ram", sets=["model.core=rnn", "dataset.digits=mnist-mini"],
                      batch_size=4, mc=1, annotations="100%")  # fmt: skip
    setup = build(spec)
    batch = OnTheFlyFeed(setup.generator, 0, spec.annotations, 4, 1).batch(0, 0, torch.device("cpu"))
    assert step_flops(setup, batch, 1) == nominal_step_flops(setup, batch, 1)
    assert setup.model.fused  # restored


def test_unshared_first_glimpse_executes_the_nominal_flops():
    """With the first glimpse computed per replica, the fused loop does every FLOP of the plain
    model (what bench_train's `unshared_*` figures divide by), and the same numbers."""
    from lgdram_cli.cli.train_cmd import train_spec
    from lgdram_cli.training.benchmark import nominal_step_flops, step_flops
    from lgdram_cli.training.feed import OnTheFlyFeed
    from lgdram_cli.training.loop import build

    spec = train_spec(dataset="cmnist-60", model="ram", sets=["model.core=rnn", "dataset.digits=mnist-mini"],
                      batch_size=4, mc=3, annotations="100%")  # fmt: skip
    setup = build(spec)
    model = setup.model
    batch = OnTheFlyFeed(setup.generator, 0, spec.annotations, 4, 1).batch(0, 0, torch.device("cpu"))
    assert step_flops(setup, batch, 3) < nominal_step_flops(setup, batch, 3)
    torch.manual_seed(5)
    shared = model(batch.images, replicas=3)
    model.share_first = False
    assert step_flops(setup, batch, 3) == nominal_step_flops(setup, batch, 3)
    torch.manual_seed(5)
    unshared = model(batch.images, replicas=3)
    torch.testing.assert_close(unshared.logits, shared.logits)
    torch.testing.assert_close(unshared.log_probs, shared.log_probs)


def test_bench_train_bad_steps(capsys):
    code, _, err = run_main(["bench", "train", "--steps", "0"], capsys)
    assert_one_line_error(code, err, "--steps")


def test_file_feed_uses_only_the_files_annotated_samples(tmp_path):
    """In HDF5 mode, location annotations come from the file's `annotated` mask (or a seeded
    subset of it): asking for more than the file marks warns and uses only the marked ones."""
    from lgdram_cli.data.gen import GenDataSpec, generate_file
    from lgdram_cli.data.h5io import CanvasFile
    from lgdram_cli.training.feed import FileFeed

    path = tmp_path / "part.h5"
    spec = GenDataSpec(dataset={"type": "cmnist", "digits": "mnist-mini"}, n=50, annotations=0.3, seed=4)
    generate_file(spec, path)
    file = CanvasFile(path)
    marked = file.annotated()
    assert marked.sum() == 15
    with pytest.warns(UserWarning, match="marks only 15"):
        everything = FileFeed(file, seed=0, annotations=1.0, batch_size=4)
    assert (everything.mask == marked).all()
    some = FileFeed(file, seed=0, annotations=0.1, batch_size=4)
    assert some.mask.sum() == 5 and not (some.mask & ~marked).any()


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipped, and within bounds (the multiply is skipped)
def test_clip_gradients_equals_torch_clip_grad_norm(max_norm):
    from lgdram_cli.training.loop import clip_gradients

    torch.manual_seed(0)
    ours, theirs = [torch.nn.Parameter(torch.randn(s)) for s in ((5, 3), (7,), (2, 2, 2))], []
    for p in ours:
        p.grad = torch.randn_like(p) * 3
        theirs.append(torch.nn.Parameter(p.detach().clone()))
        theirs[-1].grad = p.grad.clone()
    unchanged = [p.grad.clone() for p in ours]
    norm = clip_gradients(ours, max_norm)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(theirs, max_norm))  # the norm before clipping
    for a, b, before in zip(ours, theirs, unchanged):
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(a.grad, before) == (max_norm > 1)


def _tiny_setup():
    from lgdram_cli.cli.train_cmd import train_spec
    from lgdram_cli.training.feed import OnTheFlyFeed
    from lgdram_cli.training.loop import build, make_optimizer

    spec = train_spec(dataset="cmnist-60", model="ram", batch_size=4, mc=2, annotations="50%",
                      sets=["dataset.digits=mnist-mini", "model.hidden=32", "model.glimpse_hidden=16"])
    torch.manual_seed(0)
    setup = build(spec)
    batch = OnTheFlyFeed(setup.generator, 0, 0.5, 4, 1).batch(0, 0, torch.device("cpu"))
    return setup, make_optimizer(setup.model, 1e-3), batch


def test_train_step_metrics_are_the_loss_terms_read_once():
    """The step's metrics (read together, one synchronisation on a GPU) are the values each
    term computes, as plain floats; they include the gradient norm before clipping."""
    from lgdram_cli.losses import LossBatch
    from lgdram_cli.training.loop import train_step

    setup, optimizer, batch = _tiny_setup()
    torch.manual_seed(1)
    out = setup.model(batch.images, replicas=2)
    target = LossBatch(labels=batch.labels.repeat_interleave(2), centers=batch.centers.repeat_interleave(2, 0),
                       annotated=batch.annotated.repeat_interleave(2), replicas=2,
                       boxes=batch.boxes.repeat_interleave(2, 0), size=(60, 60))
    total, expected = setup.loss(out, target, 0)
    torch.manual_seed(1)
    terms = train_step(setup.model, setup.loss, optimizer, batch, 0, 2, 5.0)
    assert all(type(v) is float for v in terms.values())
    assert {k: terms[k] for k in expected} == expected
    assert terms["loss/total"] == total.item()
    assert {"reinforce/reward", "location/error", "classification/ce", "grad_norm", "train_accuracy"} <= set(terms)
    assert terms["grad_norm"] > 0


def test_a_non_finite_gradient_stops_the_step_before_the_update():
    """A finite loss whose gradient is not (an overflow in backward) must not reach the weights."""
    from lgdram_cli.training.loop import train_step

    setup, optimizer, batch = _tiny_setup()
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    setup.model.classifier.bias.register_hook(lambda g: g * float("inf"))
    with pytest.raises(FloatingPointError, match="gradient norm is"):
        train_step(setup.model, setup.loss, optimizer, batch, 0, 2, 5.0)
    assert all(torch.equal(v, setup.model.state_dict()[k]) for k, v in before.items())
