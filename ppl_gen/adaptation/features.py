"""What a trained DANN computes on images: class predictions, accuracy, and the G_f
features that the proxy A-distance and t-SNE analyses compare across domains
(Ganin et al. JMLR 2016, sec. 5.2.3)."""

from __future__ import annotations

import torch

from ppl_gen.adaptation.dann import DANN


@torch.no_grad()
def predict(model: DANN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes ``(N,)`` int64 of images ``x`` ``(N, C, H, W)`` (eval mode)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    preds = [
        model.classify(x[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat(preds)


def accuracy(model: DANN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` ``(N, C, H, W)`` classified as ``y`` ``(N,)``."""
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


@torch.no_grad()
def extract_features(model: DANN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """G_f features ``(N, feature_dim)`` (CPU, float32) of images ``x`` ``(N, C, H, W)``."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [
        model.features(x[i : i + batch_size].to(device)).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat(feats)
