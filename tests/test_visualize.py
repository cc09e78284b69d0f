"""`lgdram visualize`: glimpse GIF and sheet, learning curves, dataset previews, box geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, leftovers, run_main
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.viz import draw


def viz(capsys, *args: str) -> tuple[int, str, str]:
    return run_main(["visualize", *args, "--threads", "1"], capsys)


def viz_ok(capsys, *args: str) -> str:
    code, _, err = viz(capsys, *args)
    assert code == 0, err
    return err


def copy_run(run: Path, folder: Path, *, metrics: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(run, folder / run.name)
    if metrics:
        shutil.copy(ckpt.metrics_path(run), folder / ckpt.metrics_path(run).name)
    return folder / run.name


def frames(path: Path) -> list[tuple[tuple[int, int], int]]:
    """(size, duration in ms) of every frame of a GIF."""
    out = []
    with Image.open(path) as im:
        assert im.format == "GIF"
        for i in range(im.n_frames):
            im.seek(i)
            out.append((im.size, im.info.get("duration")))
    return out


# ---------------------------------------------------------------- glimpse GIF


def test_gif_is_the_default_next_to_the_checkpoint(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path, metrics=False)
    err = viz_ok(capsys, str(run), "--n", "4")
    gif = tmp_path / "run.glimpses.gif"
    assert gif.is_file(), err
    assert "run.glimpses.gif" in err
    assert leftovers(tmp_path) == ["run.glimpses.gif", "run.safetensors"]


def test_gif_has_one_frame_per_glimpse_and_holds_the_last(tiny_run, tmp_path, capsys):
    gif = tmp_path / "g.gif"
    viz_ok(capsys, str(tiny_run), "--gif", "--n", "4", "--out", str(gif))
    info = frames(gif)
    assert len(info) == 3  # model.glimpses of the tiny run
    durations = [d for _, d in info]
    assert all(d == durations[0] for d in durations[:-1])
    assert durations[-1] > durations[0]
    assert len({size for size, _ in info}) == 1


def test_gif_grows_with_the_number_of_canvases(tiny_run, tmp_path, capsys):
    one, many = tmp_path / "one.gif", tmp_path / "many.gif"
    viz_ok(capsys, str(tiny_run), "--n", "1", "--out", str(one))
    viz_ok(capsys, str(tiny_run), "--n", "9", "--out", str(many))
    (w1, h1), (w9, h9) = frames(one)[0][0], frames(many)[0][0]
    assert w9 > 2 * w1 and h9 > 2 * h1  # a 3 x 3 grid


def test_gif_of_a_dram_run(trained, tmp_path, capsys):
    gif = tmp_path / "d.gif"
    viz_ok(capsys, str(trained("dram")), "--n", "2", "--out", str(gif))
    assert len(frames(gif)) == 3


def test_same_seed_gives_the_same_bytes(tiny_run, tmp_path, capsys):
    a, b, c = tmp_path / "a.gif", tmp_path / "b.gif", tmp_path / "c.gif"
    viz_ok(capsys, str(tiny_run), "--n", "4", "--seed", "3", "--out", str(a))
    viz_ok(capsys, str(tiny_run), "--n", "4", "--seed", "3", "--out", str(b))
    viz_ok(capsys, str(tiny_run), "--n", "4", "--seed", "4", "--out", str(c))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    p, q = tmp_path / "p.png", tmp_path / "q.png"
    viz_ok(capsys, str(tiny_run), "--png", "--n", "2", "--seed", "3", "--out", str(p))
    viz_ok(capsys, str(tiny_run), "--png", "--n", "2", "--seed", "3", "--out", str(q))
    assert p.read_bytes() == q.read_bytes()


def test_gif_from_an_hdf5_file(tiny_run, tmp_path, capsys):
    h5 = tmp_path / "test.h5"
    code, _, err = run_main(["gen-data", "--dataset", "cmnist-60", "--set", "digits=mnist-mini", "--n", "6",
                             "--split", "test", "--out", str(h5)], capsys)
    assert code == 0, err
    gif = tmp_path / "f.gif"
    viz_ok(capsys, str(tiny_run), "--data", str(h5), "--out", str(gif))
    assert len(frames(gif)) == 3


# ---------------------------------------------------------------- PNG sheet


def test_png_sheet_default_path_and_size(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path, metrics=False)
    viz_ok(capsys, str(run), "--png", "--n", "1")
    sheet = tmp_path / "run.glimpses.png"
    assert sheet.is_file()
    viz_ok(capsys, str(run), "--png", "--n", "3", "--out", str(tmp_path / "three.png"))
    with Image.open(sheet) as one, Image.open(tmp_path / "three.png") as three:
        assert one.format == three.format == "PNG"
        assert one.width == three.width  # one column per glimpse
        assert three.height > 2.5 * one.height  # one row per sample


def test_gif_and_png_together(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path, metrics=False)
    viz_ok(capsys, str(run), "--gif", "--png", "--n", "2")
    assert leftovers(tmp_path) == ["run.glimpses.gif", "run.glimpses.png", "run.safetensors"]


# ---------------------------------------------------------------- learning curves


def test_curves_of_two_runs_overlaid(trained, tmp_path, capsys):
    a = copy_run(trained("ram"), tmp_path / "a")
    b = copy_run(trained("dram"), tmp_path / "b")
    out = tmp_path / "curves.png"
    err = viz_ok(capsys, str(a), str(b), "--curves", "--out", str(out))
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 500 and im.height > 400
    assert "curves.png" in err
    # default path: next to the first checkpoint
    viz_ok(capsys, str(a), "--curves")
    assert (tmp_path / "a" / "run.curves.png").is_file()


def test_curves_keep_runs_with_the_same_file_name_apart(trained, tmp_path, capsys, monkeypatch):
    """a/run.safetensors and b/run.safetensors (the usual layout) are two runs, two curves."""
    import lgdram_cli.viz.curves as curves

    seen = {}
    monkeypatch.setattr(curves, "plot_curves", lambda runs, out: seen.update(runs=runs))
    a = copy_run(trained("ram"), tmp_path / "a")
    b = copy_run(trained("dram"), tmp_path / "b")
    viz_ok(capsys, str(a), str(b), "--curves", "--out", str(tmp_path / "c.png"))
    assert len(seen["runs"]) == 2, list(seen["runs"])


def test_plot_curves_directly(tmp_path):
    from lgdram_cli.viz.curves import plot_curves

    records = [
        {"kind": "train", "step": 1, "loss/total": 2.3, "gamma": 1.0},
        {"kind": "eval", "step": 1, "accuracy": 0.1, "location_error_px": 10.0},
        {"kind": "train", "step": 2, "loss/total": 2.2, "gamma": 0.9},
        {"kind": "eval", "step": 2, "accuracy": 0.2, "location_error_px": None},  # fc-style: no locations
    ]
    out = tmp_path / "c.png"
    plot_curves({"one": records, "two": records[:2]}, out)
    assert Image.open(out).format == "PNG"
    assert leftovers(tmp_path) == ["c.png"]


# ---------------------------------------------------------------- dataset preview


def test_dataset_preview(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = viz_ok(capsys, "--dataset", "mcmnist-100", "--n", "4", "--set", "digits=mnist-mini")
    preview = tmp_path / "mcmnist-100-preview.png"
    assert preview.is_file(), err
    with Image.open(preview) as im:
        assert im.format == "PNG"
        # 2 x 2 cells, 100 px canvases upscaled x2, each with a caption band
        assert im.width >= 2 * 200 and im.height >= 2 * 200
    viz_ok(capsys, "--dataset", "mcmnist-100", "--n", "4", "--set", "digits=mnist-mini", "--out", "again.png")
    assert (tmp_path / "again.png").read_bytes() == preview.read_bytes()
    viz_ok(capsys, "--dataset", "mcmnist-100", "--n", "9", "--set", "digits=mnist-mini", "--out", "nine.png")
    assert Image.open(tmp_path / "nine.png").width > Image.open(preview).width


# ---------------------------------------------------------------- box geometry


def _box_extent(canvas: int, scale: int, width: int) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1), inclusive, of the outline `draw_glimpse` draws for one patch width at (0, 0)."""
    picture = Image.new("RGB", (canvas * scale, canvas * scale))
    draw.draw_glimpse(picture, (canvas, canvas), scale, (0.0, 0.0), [width], draw.GREEN)
    ys, xs = np.nonzero((np.asarray(picture) == draw.GREEN).all(-1))
    return int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())


@pytest.mark.parametrize("canvas", [60, 100, 28])
def test_glimpse_boxes_scale_with_the_retina_patch_widths(canvas):
    """One outline per retina scale, width × upscale pixels wide (± the outline's last pixel),
    centred on the glimpse location."""
    scale = draw.upscale_factor((canvas, canvas))
    assert canvas * scale >= draw.CELL_MIN
    centre = canvas * scale / 2  # location (0, 0): the middle of the canvas
    for width in (12, 24):
        x0, x1, y0, y1 = _box_extent(canvas, scale, width)
        assert abs((x1 - x0 + 1) - width * scale) <= 1, (width, x0, x1)
        assert abs((y1 - y0 + 1) - width * scale) <= 1, (width, y0, y1)
        assert x0 == y0 == centre - width * scale / 2


def test_glimpse_box_covers_exactly_the_patch_pixels():
    """A 12-px patch at (0, 0) covers canvas pixels [c − 6, c + 6): drawn, exactly 12 × upscale
    pixels (PIL's rectangle includes its end point, so the far edge must be x1 − 1, as draw_box does)."""
    for canvas in (60, 100, 28):
        scale = draw.upscale_factor((canvas, canvas))
        for width in (12, 24):
            x0, x1, y0, y1 = _box_extent(canvas, scale, width)
            assert (x1 - x0 + 1, y1 - y0 + 1) == (width * scale, width * scale), (canvas, width, x0, x1)


def test_nested_boxes_one_per_scale():
    canvas, scale = 60, draw.upscale_factor((60, 60))
    picture = Image.new("RGB", (canvas * scale, canvas * scale))
    draw.draw_glimpse(picture, (canvas, canvas), scale, (0.0, 0.0), [12, 24, 48], draw.RED)
    row = (np.asarray(picture)[canvas * scale // 2] == draw.RED).all(-1)  # the middle row
    # crossing the middle row from left to right: 3 boxes = 6 vertical edges of 2 px
    edges = np.flatnonzero(np.diff(row.astype(int)) == 1)
    assert len(edges) == 6


def test_history_path_is_drawn():
    canvas, scale = 60, 3
    picture = Image.new("RGB", (canvas * scale, canvas * scale))
    draw.draw_glimpse(picture, (canvas, canvas), scale, (0.5, 0.5), [12], draw.GREEN, history=[(-0.5, -0.5)])
    arr = np.asarray(picture)
    assert (arr == draw.PATH).all(-1).sum() > 20
    x, y = draw.to_canvas_px((-0.5, -0.5), (canvas, canvas), scale)
    assert (arr[int(y), int(x)] == draw.PATH).all()  # a dot at the earlier glimpse


def test_patch_widths_of_the_trained_model(tiny_run):
    from lgdram_cli.training.runs import load_run
    from lgdram_cli.viz.glimpses import patch_widths

    run = load_run(tiny_run)
    assert patch_widths(run.model) == [12, 24, 48]


# ---------------------------------------------------------------- bad input


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = viz(capsys, str(tmp_path / "nope.safetensors"), "--gif")
    assert_one_line_error(code, err, "not found")
    assert leftovers(tmp_path) == []


def test_several_checkpoints_need_curves(tiny_run, tmp_path, capsys):
    for mode in ("--gif", "--png"):
        code, _, err = viz(capsys, str(tiny_run), str(tiny_run), mode, "--out", str(tmp_path / "x"))
        assert_one_line_error(code, err, "--curves")
    assert leftovers(tmp_path) == []


def test_curves_without_metrics_file(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path, metrics=False)
    code, _, err = viz(capsys, str(run), "--curves")
    assert_one_line_error(code, err, "metrics")
    assert leftovers(tmp_path) == ["run.safetensors"]


def test_curves_with_a_broken_metrics_file(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    ckpt.metrics_path(run).write_text('{"kind": "train"\n')
    code, _, err = viz(capsys, str(run), "--curves")
    assert_one_line_error(code, err, "metrics")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "checkpoint"),
        (("--n", "0"), "--n"),
        (("--dataset", "nosuchset"), "nosuchset"),
    ],
)
def test_bad_visualize_options(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = viz(capsys, *args)
    assert_one_line_error(code, err, needle)
    assert leftovers(tmp_path) == []


def test_one_out_for_several_modes(tiny_run, tmp_path, capsys):
    code, _, err = viz(capsys, str(tiny_run), "--gif", "--png", "--out", str(tmp_path / "x.gif"))
    assert_one_line_error(code, err, "--out")


def test_out_folder_must_exist(tiny_run, tmp_path, capsys):
    code, _, err = viz(capsys, str(tiny_run), "--out", str(tmp_path / "no" / "g.gif"))
    assert_one_line_error(code, err, "does not exist")
    assert leftovers(tmp_path) == []


def test_whole_image_model_has_no_glimpses_to_show(trained, tmp_path, capsys):
    code, _, err = viz(capsys, str(trained("fc")), "--out", str(tmp_path / "g.gif"))
    assert_one_line_error(code, err, "no glimpses")
    assert leftovers(tmp_path) == []
