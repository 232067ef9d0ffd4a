"""Image -> model input: decoding (JPEG, PNG, FITS), stretching and framing."""

from galaxymorph.preprocess.decode import IMAGE_SUFFIXES, is_image_file, load_image

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "load_image"]
