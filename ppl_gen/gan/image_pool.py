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
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PplGenError(f"pool_size must be a non-negative integer, got {size!r}")
        self.size = size
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

    def state_dict(self) -> dict:
        """Images (CPU, stacked) and the random stream's state."""
        stacked = torch.stack(self.images).cpu() if self.images else None
        return {"size": self.size, "images": stacked, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Restore what :meth:`state_dict` returned; images go to ``device`` (default CPU)."""
        self.size = int(state["size"])
        images = state["images"]
        self.images = [] if images is None else [im.to(device or "cpu") for im in images]
        self.generator.set_state(state["rng"].cpu())
