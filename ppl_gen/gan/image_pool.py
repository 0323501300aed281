"""History of generated images for the discriminator (Shrivastava et al. 2017, sec. 2.3;
CycleGAN, Zhu et al. 2017, sec. 4: a buffer of the 50 most recent generated images).

The discriminator is updated with fakes drawn from the pool rather than only the latest
generator's, which reduces oscillation.  The pool draws from its own seeded random stream
and its whole state (images and stream) is saved with the checkpoint, so a resumed run
queries it exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch

from ppl_gen.core.errors import PplGenError


class ImagePool:
    """A buffer of up to ``size`` generated images.

    :meth:`query` takes a batch of fakes ``(B, C, H, W)`` and returns a batch of the same
    shape: while the pool is not full every image is stored and returned as is; once full,
    each image is, with probability 1/2, swapped with a random stored image (the stored one
    is returned, the new one takes its place), else returned as is.  ``size == 0`` disables
    the pool (identity).  Returned images are detached.

    Args:
        size: capacity (0 disables; CycleGAN uses 50).
        seed: seed of the pool's own random stream (CPU ``torch.Generator``).
        device: where restored images go (:meth:`load_state_dict`); the trainer's device.

    Raises:
        PplGenError: naming ``pool_size`` for a negative or non-integer ``size``.
    """

    def __init__(
        self, size: int = 50, seed: int = 0, device: torch.device | str | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PplGenError(f"pool_size must be a non-negative integer, got {size!r}")
        self.size = size
        self.device = torch.device(device) if device is not None else None
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(B, C, H, W)`` images for the discriminator (see the class docstring)."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (a weights-only checkpoint holds them): ``size`` (0-d int64),
        ``images`` ``(n, C, H, W)`` on the CPU (``(0,)`` while empty) and ``rng`` (the
        random stream's state)."""
        stacked = torch.stack(self.images).cpu() if self.images else torch.zeros(0)
        return {
            "size": torch.tensor(self.size, dtype=torch.int64),
            "images": stacked,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(
        self, state: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> None:
        """Restore what :meth:`state_dict` returned; images go to ``device`` (default: the
        pool's ``device``, else the CPU)."""
        self.size = int(state["size"])
        images = state["images"]
        target = device if device is not None else (self.device or "cpu")
        empty = images is None or images.dim() < 2 or images.shape[0] == 0
        self.images = [] if empty else [im.to(target) for im in images]
        self.generator.set_state(state["rng"].cpu())

    def reset(self, seed: int | None = None) -> None:
        """Empty the pool; with ``seed``, also re-seed its random stream."""
        self.images = []
        if seed is not None:
            self.generator.manual_seed(seed)
