"""Example inputs for the zoo's models, with the caller's batch size and shape checked first."""

import torch
from torch import Tensor

from hwlat.errors import InvalidInputError


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")


def image_shape(
    input_shape: tuple[int, ...] | None, default: tuple[int, int, int], multiple: int = 1
) -> tuple[int, int, int]:
    """The per-sample (C, H, W) to build for: `default` unless the caller overrides it."""
    if input_shape is None:
        return default
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise InvalidInputError(
            f"input_shape must be (C, H, W) positive integers, got {input_shape!r}"
        )
    if shape[1] % multiple or shape[2] % multiple:
        raise InvalidInputError(f"input_shape {shape}: H and W must be multiples of {multiple}")
    return shape


def images(batch_size: int, shape: tuple[int, int, int]) -> tuple[Tensor]:
    """A batch of standard-normal images; deterministic under the caller's seed."""
    return (torch.randn(batch_size, *shape),)
