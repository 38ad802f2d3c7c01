"""The inputs hwlat makes up when none is given: seeded, the same everywhere (numpy only).

Float inputs are standard normal, drawn in input order from one generator seeded with `seed`;
integer and bool inputs are zeros (always valid as indices), except sparse coordinates where the
caller names them (`is_coords`): unique voxels of a grid (`hwlat.graph.sparse.default_coords`).
Compiling, timing on onnxruntime, TVM or RPC, and the neuromorphic estimate all draw through here,
so one model gets the same data from each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import DTypeLike

# (name, shape, dtype) of one input
InputSpec = tuple[str, Sequence[int], DTypeLike]


def random_arrays(specs: Iterable[InputSpec], seed: int = 0, *,
                  is_coords: Callable[[str, Sequence[int], np.dtype], bool] | None = None,
                  ) -> list[np.ndarray]:
    """One array per spec, in order (see the module doc)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for name, shape, dtype in specs:
        dt = np.dtype(dtype)
        if np.issubdtype(dt, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dt))
        elif is_coords is not None and is_coords(name, shape, dt):
            from hwlat.graph.sparse import default_coords

            arrays.append(default_coords(shape[0]).astype(dt))
        else:
            arrays.append(np.zeros(shape, dt))
    return arrays


def random_feeds(specs: Sequence[InputSpec], seed: int = 0, *,
                 is_coords: Callable[[str, Sequence[int], np.dtype], bool] | None = None,
                 ) -> dict[str, np.ndarray]:
    """random_arrays by input name."""
    arrays = random_arrays(specs, seed, is_coords=is_coords)
    return {name: a for (name, _, _), a in zip(specs, arrays, strict=True)}
