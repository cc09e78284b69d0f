"""`lgdram visualize`: glimpse GIF and sheet, learning curves, dataset previews, box geometry."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFont

from helpers import assert_one_line_error, leftovers, run_main
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.models.base import ModelOutput
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.viz import draw
from lgdram_cli.viz.glimpses import dataset_sheet_image, glimpse_frames, glimpse_sheet_image, verdict


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


def test_set_changes_the_canvases_a_checkpoint_is_shown_on(tiny_run, tmp_path, capsys):
    """`--set` reaches the test canvases of a checkpoint's pictures, as in `eval` (a run trained
    with digits from a folder this machine lacks can be shown on other digits)."""
    code, _, err = viz(capsys, str(tiny_run), "--n", "2", "--out", str(tmp_path / "x.gif"),
                       "--set", "dataset.test_digits=idx:/nonexistent")  # fmt: skip
    assert code == 2 and "/nonexistent is not a directory" in err
    assert not (tmp_path / "x.gif").exists()
    a, b = tmp_path / "a.gif", tmp_path / "b.gif"
    viz_ok(capsys, str(tiny_run), "--n", "2", "--out", str(a))
    viz_ok(capsys, str(tiny_run), "--n", "2", "--out", str(b), "--set", "dataset.test_digits=mnist-mini")
    # the run trained on `mnist`, which the offline test environment serves from mnist-mini
    assert a.read_bytes() == b.read_bytes()


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


# ---------------------------------------------------------------- pictures that explain themselves

GRID_PAD = 4  # draw.grid's padding: where the first cell's canvas starts


class StubModel(torch.nn.Module):
    """A glimpse model with fixed answers: class `final` from its final logits, `steps[t]` after
    glimpse t (the final answer throughout when not given); glimpses near the canvas centre."""

    def __init__(self, final: int, steps: list[int] | None = None, glimpses: int = 3) -> None:
        super().__init__()
        self.config = SimpleNamespace(type="stub", glimpse_size=12, scales=2, scale_factor=2)
        self.final, self.steps, self.glimpses = final, steps, glimpses

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        N, T = images.shape[0], self.glimpses
        logits = torch.zeros(N, 10)
        logits[:, self.final] = 2.0  # p = e² / (e² + 9) = 45 %
        step_logits = None
        if self.steps is not None:
            step_logits = torch.zeros(N, T, 10)
            for t, c in enumerate(self.steps):
                step_logits[:, t, c] = 2.0
        locations = torch.linspace(0.0, 0.2, T)[None, :, None].expand(N, T, 2).contiguous()
        return ModelOutput(logits=logits, step_logits=step_logits, locations=locations)


def blank_batch(side: int, label: int = 7) -> CanvasBatch:
    """One empty side × side canvas whose target box lies in the top-left corner, clear of the glimpses."""
    box = torch.tensor([[side // 20, side // 20, side // 4, side // 4 + 4]], dtype=torch.float32)
    return CanvasBatch(
        torch.zeros(1, 1, side, side, dtype=torch.uint8), torch.tensor([label]), torch.zeros(1, 2), box,
        torch.zeros(1, dtype=torch.int16),
    )


def count(arr: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((arr == colour).all(-1).sum())


def assert_dashed_box(arr: np.ndarray, box: list[float], scale: int, origin: tuple[int, int] = (GRID_PAD, GRID_PAD)) -> None:
    """The target box's outline, in the target colour, along the box's scaled edges (inside them):
    corners drawn; edges long enough to dash have some pixels in the colour and some not."""
    ox, oy = origin
    x0, y0 = ox + int(box[0]) * scale, oy + int(box[1]) * scale
    x1, y1 = ox + int(box[2]) * scale - 1, oy + int(box[3]) * scale - 1  # max exclusive
    target = (arr == draw.TARGET).all(-1)
    edges = {
        "top": target[y0, x0 : x1 + 1], "bottom": target[y1, x0 : x1 + 1],
        "left": target[y0 : y1 + 1, x0], "right": target[y0 : y1 + 1, x1],
    }
    for name, edge in edges.items():
        assert edge[0] and edge[-1], f"{name} edge: corners not drawn"
        if len(edge) >= 30:
            assert 0.3 < edge.mean() < 0.9, f"{name} edge: {edge.mean():.0%} in the target colour, not dashed"
    assert not target[y0 - 1, x0 : x1 + 1].any() and not target[y0 : y1 + 1, x0 - 1].any()  # nothing outside
    assert draw.TARGET not in (draw.GREEN, draw.RED, draw.PATH)


def regions(frame: Image.Image, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(caption band, legend strip) of a one-canvas frame or sheet row: the grid's padding rows
    (all sheet colour) separate the cells from the legend."""
    arr = np.asarray(frame.convert("RGB"))
    scale = draw.upscale_factor((side, side))
    legend_top = int(np.flatnonzero((arr == draw.SHEET).all(-1).all(-1)).max()) + 1
    cell_width = side * scale
    return arr[GRID_PAD + side * scale : legend_top - GRID_PAD, GRID_PAD : GRID_PAD + cell_width], arr[legend_top:]


def text_lines(band: np.ndarray) -> list[np.ndarray]:
    """The lines of text in a caption band: runs of rows holding something other than the band colour."""
    ink = ~(band == draw.BAND).all(-1).all(-1)
    lines, start = [], None
    for y, on in enumerate([*ink, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            lines.append(band[start:y])
            start = None
    return lines


@pytest.mark.parametrize("side", [60, 100, 200])
def test_glimpse_frames_show_the_dashed_target_box(side):
    batch = blank_batch(side)
    scale = draw.upscale_factor((side, side))
    frames = glimpse_frames(StubModel(final=7), batch)
    assert len(frames) == 3  # one per glimpse
    for frame in frames:
        assert_dashed_box(np.asarray(frame), batch.boxes[0].tolist(), scale)
        # sane sizes: the canvas upscaled to at least CELL_MIN (not more than twice), text and
        # legend under it taking less room than the canvas
        assert draw.CELL_MIN <= side * scale <= 2 * draw.CELL_MIN
        assert frame.width == side * scale + 2 * GRID_PAD
        assert side * scale + 40 < frame.height < 1.6 * side * scale


@pytest.mark.parametrize("side", [60, 100, 200])
def test_caption_is_green_when_right_red_when_wrong(side):
    batch = blank_batch(side, label=7)
    right = regions(glimpse_frames(StubModel(final=7), batch)[-1], side)[0]
    wrong = regions(glimpse_frames(StubModel(final=1), batch)[-1], side)[0]
    assert right.shape == wrong.shape
    assert count(right, draw.GREEN) > 20 and count(right, draw.RED) == 0
    assert count(wrong, draw.RED) > 20 and count(wrong, draw.GREEN) == 0
    assert len(text_lines(right)) == len(text_lines(wrong)) == 2  # the verdict, the prediction after this glimpse
    # readable: the headline is at least 12 px high on every canvas size
    assert text_lines(right)[0].shape[0] >= 12


def test_the_headline_is_the_final_answer():
    """Right after the first glimpse, wrong in the end: the first frame's verdict line is red (the
    final answer), its second line and boxes green (the answer so far)."""
    batch = blank_batch(60, label=7)
    frame = glimpse_frames(StubModel(final=1, steps=[7, 1, 1]), batch)[0]
    headline, so_far = text_lines(regions(frame, 60)[0])
    assert count(headline, draw.RED) > 20 and count(headline, draw.GREEN) == 0
    assert count(so_far, draw.GREEN) > 20 and count(so_far, draw.RED) == 0
    canvas = np.asarray(frame)[GRID_PAD : GRID_PAD + 240, GRID_PAD : GRID_PAD + 240]
    assert count(canvas, draw.GREEN) > 100 and count(canvas, draw.RED) == 0


def test_verdict_text():
    probs = torch.full((10,), 0.71 / 9)
    probs[1] = 0.29
    assert verdict(7, probs) == "true 7 · pred 1 (29 %)"
    assert verdict(1, probs) == "true 1 · pred 1 (29 %)"


@pytest.mark.parametrize("side", [60, 100, 200])
def test_legend_under_the_pictures(side):
    batch = blank_batch(side)
    for picture in (glimpse_frames(StubModel(final=7), batch)[0], glimpse_sheet_image(StubModel(final=7), batch)):
        _, legend = regions(picture, side)
        assert 12 <= legend.shape[0] <= 40
        assert (~(legend == draw.BAND).all(-1)).mean() > 0.02
        for colour in (draw.TARGET, draw.GREEN, draw.RED, draw.PATH, draw.TEXT):  # a sample of each mark, and words
            assert count(legend, colour) > 0, colour


def test_glimpse_sheet_shows_the_target_box_in_every_column():
    batch = blank_batch(100)
    sheet = glimpse_sheet_image(StubModel(final=7), batch)
    cell = 200 + GRID_PAD
    for t in range(3):
        assert_dashed_box(np.asarray(sheet), batch.boxes[0].tolist(), 2, origin=(GRID_PAD + t * cell, GRID_PAD))


@pytest.mark.parametrize("side", [60, 100, 200])
def test_dataset_preview_draws_the_dashed_target_box(side):
    batch = blank_batch(side)
    sheet = dataset_sheet_image(batch)
    assert_dashed_box(np.asarray(sheet), batch.boxes[0].tolist(), draw.upscale_factor((side, side)))
    _, legend = regions(sheet, side)
    assert count(legend, draw.TARGET) > 0 and count(legend, draw.TEXT) > 0


def test_gen_data_preview_draws_the_dashed_target_box(tmp_path, capsys):
    from lgdram_cli.data.h5io import CanvasFile

    h5 = tmp_path / "d.h5"
    code, _, err = run_main(["gen-data", "--dataset", "cmnist-100", "--set", "digits=mnist-mini", "--n", "4",
                             "--split", "test", "--preview", "--out", str(h5)], capsys)
    assert code == 0, err
    batch, _ = CanvasFile(h5).read(slice(0, 1))
    with Image.open(tmp_path / "d.preview.png") as im:
        assert_dashed_box(np.asarray(im.convert("RGB")), batch.boxes[0].tolist(), draw.upscale_factor((100, 100)))


def test_gif_shows_the_target_box_of_each_canvas(tiny_run, tmp_path, capsys):
    """The real command, decoded: the GIF's palette keeps the marks' colours exact."""
    from lgdram_cli.training.runs import load_run, test_canvases

    gif = tmp_path / "g.gif"
    viz_ok(capsys, str(tiny_run), "--n", "1", "--seed", "5", "--out", str(gif))
    batch = test_canvases(load_run(tiny_run), n=1, seed=5)  # the canvases visualize drew
    side = batch.images.shape[-1]
    with Image.open(gif) as im:
        assert im.n_frames == 3  # one per glimpse, no extra frame
        for i in range(im.n_frames):
            im.seek(i)
            frame = im.convert("RGB")
            assert_dashed_box(np.asarray(frame), batch.boxes[0].tolist(), draw.upscale_factor((side, side)))
            caption, legend = regions(frame, side)
            assert count(caption, draw.GREEN) + count(caption, draw.RED) > 20
            assert count(legend, draw.TARGET) > 0 and count(legend, draw.TEXT) > 0


def test_dashes_cover_both_ends():
    for first, last in [(0, 59), (10, 200), (5, 40), (0, 13)]:
        dashes = draw._dashes(first, last)
        assert dashes[0][0] == first and dashes[-1][1] == last
        assert all(a <= b < c for (a, b), (c, _) in zip(dashes, dashes[1:]))  # in order, with gaps
    assert draw._dashes(0, 9) == [(0, 9)]  # too short to dash: solid


def test_text_without_freetype(monkeypatch):
    """Pillow without FreeType has only its ~11 px bitmap font: it is enlarged by whole pixels."""
    if not hasattr(ImageFont, "load_default_imagefont"):
        pytest.skip("Pillow < 10.1")
    bitmap = ImageFont.load_default_imagefont()
    monkeypatch.setattr(draw, "font", lambda size=14: bitmap)
    assert draw.text_width("true 7", 22) == 2 * draw.text_width("true 7", 11)
    out = draw.caption(Image.new("RGB", (200, 200)), [("true 7 · pred 1 (29 %)", draw.RED)])
    assert count(np.asarray(out)[200:], draw.RED) > 20


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
