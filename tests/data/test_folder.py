"""imagefolder:PATH: PNG files with known pixels decode exactly; conversions, resize and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from support.official_formats import write_png

from resnetlab.data import load_dataset, read_image, stream_imagefolder
from resnetlab.errors import UserError


def _rgb(seed: int, h: int = 6, w: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def flat_folder(tmp_path):
    """PATH/CLASS/*.png without split folders: 2 cats, 1 dog; returns (path, {(class, name): pixels})."""
    pixels = {("cat", "a.png"): _rgb(1), ("cat", "b.png"): _rgb(2), ("dog", "z.png"): _rgb(3)}
    for (cls, name), array in pixels.items():
        write_png(tmp_path / "pets" / cls / name, array)
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / "dog" / "._z.png").write_bytes(b"macOS resource fork, not a PNG")
    return tmp_path / "pets", pixels


def test_round_trip_of_known_pixels(flat_folder):
    path, pixels = flat_folder
    imageset = load_dataset(f"imagefolder:{path}")
    assert imageset.classes == ["cat", "dog"]
    assert imageset.labels.tolist() == [0, 0, 1]
    assert imageset.images.shape == (3, 3, 6, 5) and imageset.images.dtype == torch.uint8
    for i, key in enumerate([("cat", "a.png"), ("cat", "b.png"), ("dog", "z.png")]):
        assert torch.equal(imageset.images[i], torch.from_numpy(pixels[key]).permute(2, 0, 1))


def test_greyscale_to_rgb_and_rgb_to_grey(tmp_path):
    grey = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
    write_png(tmp_path / "d" / "g" / "grey.png", grey)
    as_rgb = load_dataset(f"imagefolder:{tmp_path / 'd'}").images[0]
    assert as_rgb.shape == (3, 6, 5) and all(torch.equal(as_rgb[c], torch.from_numpy(grey)) for c in range(3))
    neutral = np.repeat(grey[:, :, None], 3, axis=2)  # R = G = B: its luma is that value exactly
    colour = _rgb(4)
    write_png(tmp_path / "e" / "c" / "neutral.png", neutral)
    write_png(tmp_path / "e" / "c" / "colour.png", colour)
    as_grey = load_dataset(f"imagefolder:{tmp_path / 'e'}", channels=1).images  # files sorted: colour, neutral
    assert as_grey.shape == (2, 1, 6, 5)
    assert torch.equal(as_grey[1, 0], torch.from_numpy(grey))
    assert torch.equal(as_grey[0, 0], torch.from_numpy(np.array(Image.fromarray(colour).convert("L"))))


def test_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([_rgb(5), np.full((6, 5, 1), 100, dtype=np.uint8)], axis=2)
    path = write_png(tmp_path / "d" / "x" / "rgba.png", rgba)
    assert Image.open(path).mode == "RGBA"
    image = load_dataset(f"imagefolder:{tmp_path / 'd'}").images[0]
    assert torch.equal(image, torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1))


def test_resize_and_center_crop_match_torchvision(tmp_path):
    array = _rgb(6, h=30, w=40)
    path = write_png(tmp_path / "d" / "x" / "wide.png", array)
    image = load_dataset(f"imagefolder:{tmp_path / 'd'}", image_size=16).images[0]
    expected = T.Compose([T.Resize(16), T.CenterCrop(16), T.PILToTensor()])(Image.open(path).convert("RGB"))
    assert image.shape == (3, 16, 16) and torch.equal(image, expected)


def test_different_sizes_need_image_size(tmp_path):
    write_png(tmp_path / "d" / "x" / "a.png", _rgb(1, 6, 5))
    write_png(tmp_path / "d" / "x" / "b.png", _rgb(2, 7, 5))
    with pytest.raises(UserError, match=r"b.png is 5x7 but .*a.png is 5x6; set data.image_size"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}")
    assert load_dataset(f"imagefolder:{tmp_path / 'd'}", image_size=4).images.shape == (2, 3, 4, 4)


def test_empty_class_folder_is_named(flat_folder):
    path, _ = flat_folder
    (path / "fish").mkdir()
    (path / "fish" / "readme.txt").write_text("no images yet")
    with pytest.raises(UserError, match=f"class folder {path / 'fish'} has no images"):
        load_dataset(f"imagefolder:{path}")


def test_corrupt_image_is_named(flat_folder):
    path, _ = flat_folder
    png = path / "cat" / "b.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(UserError, match=f"{png} is not a readable image"):
        load_dataset(f"imagefolder:{path}")


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")


def test_split_folders(tmp_path):
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["a", "c"]), ("test", ["b"])):
        for k, cls in enumerate(classes):
            write_png(tmp_path / "d" / split / cls / f"{k}.png", _rgb(k, 4, 4))
    root = f"imagefolder:{tmp_path / 'd'}"
    assert load_dataset(root, split="train").labels.tolist() == [0, 1, 2]
    val = load_dataset(root, split="val")
    assert val.classes == ["a", "b", "c"] and val.labels.tolist() == [0, 2]  # class indices from train/
    assert load_dataset(root, split="test").labels.tolist() == [1]
    write_png(tmp_path / "d" / "test" / "zebra" / "0.png", _rgb(9, 4, 4))
    with pytest.raises(UserError, match="zebra is a class the train folder does not have"):
        load_dataset(root, split="test")


def test_missing_split_folder(flat_folder, tmp_path):
    path, _ = flat_folder
    with pytest.raises(UserError, match="has no test/ folder"):
        load_dataset(f"imagefolder:{path}", split="test")
    write_png(tmp_path / "s" / "train" / "a" / "0.png", _rgb(0, 4, 4))
    with pytest.raises(UserError, match=r"has no val/ folder \(it has train/\)"):
        load_dataset(f"imagefolder:{tmp_path / 's'}", split="val")


def test_too_large_for_memory_points_to_streaming(flat_folder):
    path, _ = flat_folder
    with pytest.raises(UserError, match="over the in-memory limit.*stream_imagefolder"):
        load_dataset(f"imagefolder:{path}", max_bytes=200)
    assert len(load_dataset(f"imagefolder:{path}", max_bytes=3 * 90)) == 3


def test_stream_yields_the_same_uint8_batches(flat_folder):
    path, _ = flat_folder
    in_memory = load_dataset(f"imagefolder:{path}", image_size=4)
    stream = stream_imagefolder(path, image_size=4, batch_size=2, shuffle=False, num_workers=0)
    batches = list(stream)
    assert [len(y) for _, y in batches] == [2, 1] and stream.dataset.classes == ["cat", "dog"]
    assert all(x.dtype == torch.uint8 for x, _ in batches)
    assert torch.equal(torch.cat([x for x, _ in batches]), in_memory.images)
    assert torch.cat([y for _, y in batches]).tolist() == in_memory.labels.tolist()


def test_read_image_single_file(flat_folder):
    path, pixels = flat_folder
    image = read_image(path / "dog" / "z.png", channels=3)
    assert torch.equal(image, torch.from_numpy(pixels[("dog", "z.png")]).permute(2, 0, 1))


def _grey16(h: int = 6, w: int = 80) -> np.ndarray:
    """A horizontal 16-bit gradient over nearly the whole range (94..65508, the values of the bug report)."""
    return np.tile(np.linspace(94, 65508, w).round().astype(np.uint16), (h, 1))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_grey_is_scaled_not_saturated(tmp_path, mode: str, channels: int):
    values = _grey16()
    dtype = "<u2" if mode == "I;16" else ">u2"
    path = tmp_path / ("g16.png" if mode == "I;16" else "g16.tif")  # PNG stores I;16; TIFF keeps big-endian
    Image.frombytes(mode, values.shape[::-1], values.astype(dtype).tobytes()).save(path)
    assert Image.open(path).mode == mode
    image = read_image(path, channels=channels)
    assert image.shape == (channels, *values.shape)
    row = image[0, 0].to(torch.int64)
    assert bool((row[1:] >= row[:-1]).all()) and int(row[0]) == 0 and int(row[-1]) == 255  # follows the gradient
    expected = torch.from_numpy(np.round(values / 257).astype(np.int64))
    assert int((image.to(torch.int64) - expected).abs().max()) <= 1
    assert float((image == 255).double().mean()) < 0.05  # was 99% white


def test_16_bit_grey_loads_into_an_image_folder(tmp_path):
    values = _grey16(4, 4)
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        Image.frombytes("I;16", (4, 4), values.astype("<u2").tobytes()).save(tmp_path / "d" / cls / "x.png")
    images = load_dataset(f"imagefolder:{tmp_path / 'd'}", channels=1).images
    assert images.dtype == torch.uint8 and torch.equal(images[0, 0], torch.from_numpy(np.round(values / 257)).byte())


def test_a_broken_symlink_among_the_images_is_named(flat_folder):
    path, _ = flat_folder
    (path / "cat" / "gone.png").symlink_to(path / "nowhere.png")
    with pytest.raises(UserError, match=r"cat/gone.png is a broken symbolic link \(to .*nowhere.png\); restore"):
        load_dataset(f"imagefolder:{path}")
