"""Figures and reports: loss curves, image grids, scatter/t-SNE plots and report.md.
Nothing here selects a matplotlib backend."""
