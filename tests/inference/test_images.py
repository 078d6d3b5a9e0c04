"""Image files as a checkpoint's input: the one reading loop that `predict` and `explain` share."""

from __future__ import annotations

import torch
from PIL import Image

from resnetlab.inference.images import expand_inputs, read_images

INFO = {"in_chans": 1, "image_size": 16, "normalization": {"mean": [0.5], "std": [0.25]},
        "config": {"data": {"image_size": None, "resize": None}}}


def test_every_file_gets_a_result_and_the_readable_ones_an_image_of_the_checkpoints_size(tmp_path):
    Image.new("RGB", (20, 24), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    Image.new("L", (16, 16), 7).save(tmp_path / "c.png")
    paths = expand_inputs([tmp_path])
    results, groups = read_images(paths, INFO)
    assert [r["path"] for r in results] == [str(tmp_path / name) for name in ("a.png", "b.png", "c.png")]
    assert "error" in results[1] and "error" not in results[0] and "error" not in results[2]
    assert [[slot for slot, _ in group] for group in groups] == [[0, 2]]  # one shape: one batch
    images = [image for _, image in groups[0]]
    assert all(image.shape == (1, 16, 16) and image.dtype == torch.uint8 for image in images)
    assert int(images[1].unique()) == 7  # a file of the run's size and channels is used pixel for pixel
