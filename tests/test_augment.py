import numpy as np
import pytest
import torch

from galaxymorph.labels import GZ1_CLASSES, mirror_permutation
from galaxymorph.preprocess.augment import SurveyAugmentation, centre_view, mirror, survey_augment, symmetry_augment


def clockwise_pattern(size: int = 96) -> torch.Tensor:
    """An asymmetric test image: a bright bar in the top-left quadrant."""
    image = torch.zeros(1, 3, size, size)
    image[:, :, size // 4: size // 2 - 4, size // 4: size // 2] = 1.0
    return image


def test_mirror_swaps_the_winding_label():
    permutation = mirror_permutation(GZ1_CLASSES)
    clockwise, anticlockwise = GZ1_CLASSES.index("spiral_clockwise"), GZ1_CLASSES.index("spiral_anticlockwise")
    assert permutation[clockwise] == anticlockwise and permutation[anticlockwise] == clockwise
    assert all(permutation[i] == i for i, name in enumerate(GZ1_CLASSES) if "spiral_" not in name)


def test_augmented_mirror_images_carry_swapped_labels():
    """Each output is either a rotation (label kept) or a mirrored rotation (winding label swapped)."""
    clockwise = GZ1_CLASSES.index("spiral_clockwise")
    images = clockwise_pattern().repeat(64, 1, 1, 1)
    targets = torch.full((64,), clockwise)
    generator = torch.Generator().manual_seed(0)
    augmented, new_targets = symmetry_augment(images, targets, output_size=64, mirror_permutation=mirror_permutation(GZ1_CLASSES),
                                              generator=generator, zoom_range=(1.0, 1.0))
    assert augmented.shape == (64, 3, 64, 64)
    swapped = new_targets != clockwise
    assert 10 < swapped.sum() < 54
    assert set(new_targets[swapped].tolist()) == {GZ1_CLASSES.index("spiral_anticlockwise")}
    # A mirrored view matches some rotation of the mirror image, never of the original (for this chiral pattern).
    original, mirrored_view = centre_view(clockwise_pattern(), 64), centre_view(mirror(clockwise_pattern()), 64)
    for image, was_mirrored in zip(augmented, swapped):
        reference = mirrored_view if was_mirrored else original
        best = min(float((torch.rot90(image, k, dims=(1, 2)) - reference[0]).abs().mean()) for k in range(4))
        assert best < 0.2


def test_centre_view_is_the_central_crop():
    image = torch.arange(96 * 96, dtype=torch.float32).reshape(1, 1, 96, 96)
    view = centre_view(image, 64)
    assert torch.allclose(view, image[:, :, 16:80, 16:80], atol=1e-3)


def test_uint8_input_is_scaled_to_unit_range():
    images = torch.full((2, 3, 96, 96), 255, dtype=torch.uint8)
    assert torch.allclose(centre_view(images, 64), torch.ones(2, 3, 64, 64))
    np.testing.assert_array_equal(mirror(torch.arange(4.0).reshape(1, 1, 1, 4))[0, 0, 0], [3, 2, 1, 0])


def test_survey_augmentation_stays_an_image_and_is_reproducible():
    images = centre_view(clockwise_pattern(), 64).repeat(32, 1, 1, 1)
    first = survey_augment(images, torch.Generator().manual_seed(1))
    again = survey_augment(images, torch.Generator().manual_seed(1))
    assert first.shape == images.shape and 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, again)
    changed = (first - images).abs().flatten(1).amax(1) > 0.02
    assert 0 < changed.sum() < 32  # some images pass through nearly untouched


def test_survey_augmentation_can_be_switched_off_piece_by_piece():
    images = centre_view(clockwise_pattern(), 64).repeat(8, 1, 1, 1)
    untouched = SurveyAugmentation(share=0.0, jpeg_share=0.0)
    assert torch.allclose(survey_augment(images, torch.Generator().manual_seed(0), untouched), images)
    blurred_only = SurveyAugmentation(share=1.0, max_gamma_factor=1.0, max_band_gain=1.0, max_noise=0.0, jpeg_share=0.0)
    blurred = survey_augment(images, torch.Generator().manual_seed(0), blurred_only)
    assert blurred.sum().item() == pytest.approx(images.sum().item(), rel=0.05)  # blur keeps the light
    assert (blurred - images).abs().max() > 0.1
