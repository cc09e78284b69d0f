"""The retina against a slow loop-based reference, plus its placement conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lgdram_cli.models.retina import Retina

torch.set_num_threads(1)


def reference(images: torch.Tensor, loc: torch.Tensor, g: int, scales: int, s: int, replicas: int = 1):
    """Crop each patch from a zero-padded copy, one row and scale at a time, then area-average."""
    _, C, H, W = images.shape
    out = []
    for r in range(loc.shape[0]):
        img = images[r // replicas]
        x, y = loc[r].clamp(-1, 1).tolist()
        cx, cy = (x + 1) / 2 * W, (y + 1) / 2 * H
        patches = []
        for k in range(scales):
            P = g * s**k
            pad = P + 2
            x0 = math.floor(cx - P / 2 + 0.5 + 1e-3)  # round(c − P/2), ties up
            y0 = math.floor(cy - P / 2 + 0.5 + 1e-3)
            big = F.pad(img, (pad, pad, pad, pad))
            crop = big[:, y0 + pad : y0 + pad + P, x0 + pad : x0 + pad + P]
            patches.append(F.interpolate(crop[None], size=(g, g), mode="area")[0])
        out.append(torch.cat(patches))
    return torch.stack(out)


@pytest.mark.parametrize(
    "C,H,W,g,scales,s",
    [
        (1, 60, 60, 12, 3, 2), (3, 40, 90, 5, 3, 2), (1, 28, 28, 8, 2, 3), (3, 33, 47, 7, 1, 2), (1, 40, 90, 6, 4, 2),
        # glimpses narrower than two blocks of the next scale: the grids need wider zero borders
        (1, 20, 30, 2, 3, 3), (2, 17, 23, 1, 3, 4),
        # phase-split grids: factor 1 (one phase), a wide factor, four scales on a large canvas
        (1, 20, 20, 5, 3, 1), (1, 9, 13, 3, 2, 5), (3, 200, 150, 12, 4, 2),
    ],
)
def test_matches_reference(C, H, W, g, scales, s):
    torch.manual_seed(0)
    images = torch.rand(4, C, H, W)
    # interior, near and beyond the edges, exact corners
    loc = torch.cat([torch.rand(12, 2) * 2.4 - 1.2, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [0.0, 0.0]])])
    retina = Retina(g, scales, s)
    got = retina(images, loc[:16].reshape(4, 4, 2)[:, 0], replicas=1)
    torch.testing.assert_close(got, reference(images, loc[:16].reshape(4, 4, 2)[:, 0], g, scales, s))
    # replicas: 16 rows, 4 per image, pyramid computed for the 4 images only
    got = retina.glimpse(retina.prepare(images), loc, replicas=4)
    assert got.shape == (16, scales * C, g, g)
    torch.testing.assert_close(got, reference(images, loc, g, scales, s, replicas=4))


@pytest.mark.parametrize("s", [2, 3])  # 1/3² is inexact: the two paths must also scale in the same order
def test_the_export_path_equals_the_in_place_path(monkeypatch, s):
    """While exporting, `prepare` builds the grids by padding and reads them cell by cell (graph
    capture follows neither writes into slices nor overlapping views): the glimpses must be the
    same, bit for bit."""
    import lgdram_cli.models.retina as retina_module

    torch.manual_seed(0)
    images = torch.rand(3, 2, 40, 90)
    loc = torch.cat([torch.rand(10, 2) * 2.4 - 1.2, torch.tensor([[-1.0, 1.0], [1.0, -1.0]])])
    retina = Retina(7, 3, s)
    in_place = retina.glimpse(retina.prepare(images, reuse=True), loc, replicas=4)
    monkeypatch.setattr(retina_module, "exporting", lambda: True)
    assert torch.equal(retina.glimpse(retina.prepare(images), loc, replicas=4), in_place)


def test_reused_state_equals_a_fresh_one():
    """`prepare(reuse=True)` rewrites the last state of the same shape in place (the zero
    borders are never rewritten): every glimpse must read as from a state built from scratch."""
    torch.manual_seed(0)
    retina = Retina(5, 3, 2)
    loc = torch.rand(12, 2) * 2.4 - 1.2
    first = retina.prepare(torch.rand(3, 2, 30, 41), reuse=True)
    for images in (torch.rand(3, 2, 30, 41), torch.zeros(3, 2, 30, 41), torch.rand(3, 2, 30, 41) * 7):
        state = retina.prepare(images, reuse=True)
        assert state is first  # reused, not rebuilt
        assert torch.equal(retina.glimpse(state, loc, replicas=4), retina.glimpse(retina.prepare(images), loc, replicas=4))
    # another batch shape gets its own state, and a fresh one is never handed out again
    other = retina.prepare(torch.rand(2, 2, 30, 41), reuse=True)
    assert other is not first and retina.prepare(torch.rand(2, 2, 30, 41)) is not other


def test_reuse_is_per_thread():
    import threading

    retina, images = Retina(4, 2, 2), torch.rand(2, 1, 20, 20)
    mine = retina.prepare(images, reuse=True)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(retina.prepare(images, reuse=True)))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and retina.prepare(images, reuse=True) is mine


def test_a_batch_too_large_for_int32_indices_is_a_user_error(monkeypatch):
    import lgdram_cli.models.retina as retina_module
    from lgdram_cli.errors import UserError

    monkeypatch.setattr(retina_module, "MAX_CELLS", 10_000)  # instead of allocating 2**31 floats
    with pytest.raises(UserError, match="smaller --batch-size"):
        Retina(6, 3, 2).prepare(torch.rand(8, 1, 30, 30))
    Retina(6, 3, 2).prepare(torch.rand(1, 1, 30, 30))  # a smaller batch fits


def test_non_finite_locations_stay_in_bounds():
    retina = Retina(6, 3, 2)
    out = retina(torch.rand(2, 1, 30, 30), torch.tensor([[float("nan"), 0.0], [float("inf"), -float("inf")]]))
    assert out.shape == (2, 3, 6, 6) and torch.isfinite(out).all()


def test_constant_image_inside_and_zero_outside():
    retina = Retina(6, 3, 2)
    images = torch.full((2, 3, 50, 50), 0.7)
    inside = retina(images, torch.zeros(2, 2))
    torch.testing.assert_close(inside, torch.full_like(inside, 0.7))
    corner = retina(images, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    # at a corner the largest patch is three quarters outside: its far quadrant reads zero
    assert corner[0, 6:, :2, :2].abs().max() == 0 and corner[1, 6:, -2:, -2:].abs().max() == 0
    assert corner[0, 6:, -2:, -2:].min() > 0.69


@pytest.mark.parametrize("g", [5, 12])
def test_centre_convention(g):
    """A bright pixel at column i, row j sits at glimpse index (g−1)//2 for x = (2i+1)/W − 1."""
    H, W = 40, 90
    retina = Retina(g, 3, 2)
    for i, j in [(0, 0), (17, 9), (89, 39), (45, 20)]:
        img = torch.zeros(1, 1, H, W)
        img[0, 0, j, i] = 1.0
        loc = torch.tensor([[(2 * i + 1) / W - 1, (2 * j + 1) / H - 1]])
        out = retina(img, loc)[0]
        for k in range(3):
            peak = divmod(int(out[k].argmax()), g)
            assert peak == ((g - 1) // 2, (g - 1) // 2), (i, j, k)
            assert out[k].max() == pytest.approx(1 / 4**k)


def test_no_autograd_and_validation():
    retina = Retina(4, 2, 2)
    images = torch.rand(2, 1, 20, 20, requires_grad=True)
    assert not retina(images, torch.zeros(2, 2, requires_grad=True)).requires_grad
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            Retina(4, 2, bad)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_onnx_export(tmp_path):
    onnx = pytest.importorskip("onnx")  # noqa: F841
    ort = pytest.importorskip("onnxruntime")

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.retina = Retina(6, 3, 2)

        def forward(self, images, loc):
            return self.retina(images, loc)

    torch.manual_seed(0)
    images, loc = torch.rand(2, 1, 30, 40), torch.rand(2, 2) * 2 - 1
    path = tmp_path / "retina.onnx"
    torch.onnx.export(Wrap(), (images, loc), str(path), opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path))
    (got,) = sess.run(None, {sess.get_inputs()[0].name: images.numpy(), sess.get_inputs()[1].name: loc.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), Wrap()(images, loc))
