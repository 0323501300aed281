"""N(0, 0.02) weight initialisation of DCGAN (Radford et al. 2016, sec. 4) and CycleGAN
(Zhu et al. 2017, sec. 7.1, following pix2pix)."""

from __future__ import annotations

from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)


def init_weights_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise ``module`` in place and return it.

    Convolution, transposed-convolution, linear and embedding weights ~ N(0, ``std``);
    normalisation scales ~ N(1, ``std``); every bias 0.  ``std`` is in weight units (0.02 in
    both papers).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module
