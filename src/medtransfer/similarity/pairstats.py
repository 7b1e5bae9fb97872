"""What every measure's score, interval and null of one pair of repeat matrices share, computed
once: the layer-wise analysis scores each pair, layer and repeat with several measures (CCA and
CKA by default), and each of them used to redo the same products over the rows.

``x (m * k, p)``, ``y (m * k, q)``: the two networks' rows of one repeat, image-major, ``k`` rows
per image (:mod:`medtransfer.similarity.bootstrap`). :class:`PairStats` computes on first use and
keeps:

- the centred Gram blocks of the point values (numpy, the products ``cca`` takes), shared by
  CCA and linear CKA where both take the same route (:func:`point_value`);
- the rows as float64 torch, centred by their mean (``z (m * k, p + q)``), and ``z^T z``: the
  derivative influences of the linear bootstrap and the Gram matrices of the permutation null;
- the per-image blocks (:class:`ImageBlocks`): jackknife influences and exact resamples;
- the image-pair cross blocks ``X_i^T Y_j`` of the permutation null, once its permutations
  outnumber the images.

Every number is the one the per-measure computation gives (the same functions on the same
statistics); only where a statistic is now taken once instead of per measure can its rounding
differ (tested against the per-measure path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity._validation import as_pair, check_cca_shape, is_tensor
from medtransfer.similarity.canonical import cca_from_centred_gram, centred_gram
from medtransfer.similarity.cka import cka_from_centred_gram, linear_cka

#: Measures whose point value comes from the shared centred Gram blocks (:func:`point_value`).
GRAM_POINT_VALUES = ("cca", "cca_r2", "cka")


@dataclass(frozen=True)
class ImageBlocks:
    """Per-image sufficient statistics of ``(x, y)`` rows: torch float64 on the rows' device.

    ``gram (m, d, d)`` with d = p + q; ``sums (m, d)``; ``rows_per_image`` k; ``p`` columns of x.
    """

    gram: Any
    sums: Any
    rows_per_image: int
    p: int

    @property
    def images(self) -> int:
        return int(self.gram.shape[0])


def as_torch(a: Any):
    """``a`` as a float64 torch tensor (on its device)."""
    import torch

    if is_tensor(a):
        return a.to(torch.float64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def split_images(x: Any, y: Any, rows_per_image: int) -> tuple[Any, Any, int]:
    """``(x, y, m)``: checked rows as float64 torch and the number of images ``m``."""
    x, y = as_pair(x, y, min_rows=2)
    n = x.shape[0]
    k = int(rows_per_image)
    if k < 1 or n % k:
        raise MedtransferError(f"rows_per_image must divide the {n} rows of x and y (image-major blocks), got {rows_per_image}")
    return as_torch(x), as_torch(y), n // k


def image_blocks_of(z: Any, rows_per_image: int, p: int) -> ImageBlocks:
    """Per-image Gram blocks and column sums of centred rows ``z (m * k, d)``."""
    m = z.shape[0] // int(rows_per_image)
    blocks = z.reshape(m, int(rows_per_image), z.shape[1])
    return ImageBlocks(blocks.transpose(1, 2) @ blocks, blocks.sum(dim=1), int(rows_per_image), p)


class PairStats:
    """The shared statistics of one pair of repeat matrices ``x (m * k, p)``, ``y (m * k, q)``
    (module notes), each computed on first use. Nothing is checked before a statistic is asked
    for, so errors arise where the per-measure computation raised them."""

    def __init__(self, x: Any, y: Any, rows_per_image: int) -> None:
        self.x, self.y, self.rows_per_image = x, y, int(rows_per_image)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make):  # noqa: ANN001, ANN202
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def torch_rows(self) -> tuple[Any, Any, int]:
        """``(x, y, m)`` as float64 torch (:func:`split_images`)."""
        return self._get("rows", lambda: split_images(self.x, self.y, self.rows_per_image))

    def centred(self) -> Any:
        """``z = [x, y] - column means``, float64 torch ``(m * k, p + q)``."""
        def make():  # noqa: ANN202
            import torch

            tx, ty, _ = self.torch_rows()
            z = torch.cat([tx, ty], dim=1)
            return z - z.mean(dim=0, keepdim=True)

        return self._get("centred", make)

    def gram(self) -> Any:
        """``z^T z``, float64 torch ``(p + q, p + q)``."""
        return self._get("gram", lambda: self.centred().T @ self.centred())

    @property
    def p(self) -> int:
        return int(self.torch_rows()[0].shape[1])

    def blocks(self) -> ImageBlocks:
        """Per-image blocks of the centred rows (:class:`ImageBlocks`)."""
        return self._get("blocks", lambda: image_blocks_of(self.centred(), self.rows_per_image, self.p))

    def cached(self, key: str) -> Any:
        """A statistic another module keeps here (e.g. the null's cross blocks), or None."""
        return self._cache.get(key)

    def keep(self, key: str, value: Any) -> Any:
        self._cache[key] = value
        return value

    def drop(self, key: str) -> None:
        """Forget a statistic that will not be asked for again (memory)."""
        self._cache.pop(key, None)

    def point_value(self, measure: Any) -> float:
        """``measure(x, y)`` (a :class:`~medtransfer.similarity.registry.Measure`), with the centred
        Gram blocks taken once for CCA, mean squared CCA and linear CKA (float32 numpy input, the
        analysis' activations: for other input each measure takes its own products, as before)."""
        if measure.name not in GRAM_POINT_VALUES or is_tensor(self.x) or is_tensor(self.y) \
                or np.asarray(self.x).dtype != np.float32 or np.asarray(self.y).dtype != np.float32:
            return measure(self.x, self.y)
        if measure.name == "cka":
            x, y = as_pair(self.x, self.y, min_rows=2)  # linear_cka's checks, in its order
            if x.shape[0] < x.shape[1] + y.shape[1]:
                return float(linear_cka(x, y))
            return cka_from_centred_gram(x, y, self._point_gram())
        x, y = as_pair(self.x, self.y, min_rows=3, check_finite=False)  # cca's checks, in its order
        check_cca_shape(x, y)
        result = cca_from_centred_gram(x, y, self._point_gram())
        return result.mean if measure.name == "cca" else float(np.mean(result.rho ** 2))

    def _point_gram(self):  # noqa: ANN202
        def make():  # noqa: ANN202
            x, y = as_pair(self.x, self.y, min_rows=2, check_finite=False)
            return centred_gram(x, y)

        return self._get("point_gram", make)
