"""The markdown report of a comparison run (``ppl-gen compare``): ``report.md`` and its table.

:func:`format_metrics_table` renders ``metrics.json``'s per-scheme results as a GitHub
markdown table; :func:`write_report` writes ``report.md`` (setup, table, figure links,
notes) through :func:`ppl_gen.core.io.write_text`, so a crash mid-write never leaves a
half-written report.  Units: every bound is in nats per datapoint (a natural-log
likelihood bound averaged over datapoints); wall time is in seconds.

The figures live in one-idea modules: :mod:`ppl_gen.viz.curves` (loss and objective
curves), :mod:`ppl_gen.viz.grids` (image grids, reconstructions, the manifold figure),
:mod:`ppl_gen.viz.manifold` (the decoded latent manifold) and
:mod:`ppl_gen.viz.diagnostics` (PSIS k-hat).  Their public functions are re-exported here
so that ``from ppl_gen.viz import report`` callers keep working.

Source: Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR:
the IWAE-K bound is never below the ELBO (in expectation) and tightens as K grows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import write_text
from ppl_gen.infer.diagnostics import khat_cell
from ppl_gen.viz.curves import plot_loss_curves, plot_objective_vs_time
from ppl_gen.viz.diagnostics import plot_khat_histogram
from ppl_gen.viz.figures import PathLike
from ppl_gen.viz.grids import image_grid, save_image_panels, save_manifold, save_reconstructions
from ppl_gen.viz.manifold import latent_manifold_grid

__all__ = [
    "format_metrics_table",
    "image_grid",
    "latent_manifold_grid",
    "plot_khat_histogram",
    "plot_loss_curves",
    "plot_objective_vs_time",
    "ranking",
    "save_image_panels",
    "save_manifold",
    "save_reconstructions",
    "write_report",
]

_NA = "n/a"


def _num(value: Any) -> float | None:
    """A float from a metrics value, or None when missing / not numeric."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any, spec: str) -> str:
    v = _num(value)
    return _NA if v is None else format(v, spec)


def _fmt_pm(value: Any, se: Any) -> str:
    """``"-25.31 ± 0.12"``; just the value when the standard error is missing."""
    v = _num(value)
    if v is None:
        return _NA
    s = _num(se)
    return f"{v:.2f}" if s is None else f"{v:.2f} ± {s:.2f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _schemes(metrics: Mapping) -> Mapping[str, Mapping]:
    schemes = metrics.get("schemes") if isinstance(metrics, Mapping) else None
    if not isinstance(schemes, Mapping):
        raise PplGenError("metrics must be a mapping with a 'schemes' mapping {name: {...}}")
    return schemes


def format_metrics_table(metrics: Mapping) -> str:
    """Format the per-scheme results of a comparison run as a GitHub markdown table.

    Args:
        metrics: the ``metrics.json`` schema of ``ppl-gen compare`` (see README): ``{"dataset",
            "model", ..., "schemes": {name: {"final_train_objective", "test_elbo",
            "test_elbo_se", "test_iwae", "test_iwae_se", "iwae_k", "test_log_likelihood",
            "gap_exact_minus_iwae", "gap_iwae_minus_elbo", "approximation_gap",
            "amortisation_gap", "psis_khat_mean", "psis_khat_frac_above_0_7",
            "train_seconds", "iterations", ...}}}``; bounds in nats per test datapoint, times
            in seconds.

    Returns:
        The table (no trailing newline): one row per scheme in mapping order.  Bounds read
        ``"-25.31 ± 0.12"`` (mean ± standard error over test points); IWAE − ELBO is the
        difference of the means; ``"n/a"`` marks a missing or ``None`` value.  The k-hat
        column gives the count of scored test points with k-hat > 0.7 ("3 of 359"); a
        scheme is flagged "bound unreliable" only when more than 10% of them are
        (:data:`ppl_gen.infer.diagnostics.UNRELIABLE_FRACTION`, Vehtari et al. 2024), and
        reads "not applicable" for a discrete proposal.  A row scored on fewer test points
        than ``n_test`` (``n_evaluated``, e.g. NUTS) shows ``(n = 10 of 359)`` after its name;
        a row whose fit missed its convergence criterion (``converged`` false) shows
        ``(not converged)`` and is left out of :func:`ranking`.

    Raises:
        PplGenError: if ``metrics`` has no ``schemes`` mapping.
    """
    schemes = _schemes(metrics)
    header = (
        "| scheme | train objective (nats) | test ELBO (nats) | test IWAE-K (nats) "
        "| log p(x) (nats; exact or AIS) | log p(x) − IWAE | IWAE − ELBO | approximation gap "
        "| amortisation gap | PSIS k̂ mean | k̂ > 0.7 | train time (s) | iterations |"
    )
    lines = [header, "|:---|" + "---:|" * 12]
    for name, row in schemes.items():
        row = row if isinstance(row, Mapping) else {}
        elbo, iwae = _num(row.get("test_elbo")), _num(row.get("test_iwae"))
        gap = _NA if elbo is None or iwae is None else f"{iwae - elbo:.2f}"
        frac_cell = khat_cell(row)
        label = str(name)
        n_rows, n_all = _num(row.get("n_evaluated")), _num(metrics.get("n_test"))
        if n_rows is not None and n_all is not None and n_rows < n_all:
            label += f" (n = {int(n_rows)} of {int(n_all)})"
        if row.get("converged") is False and not row.get("failed"):
            label += " (not converged)"
        iterations = _num(row.get("iterations"))
        objective = _fmt(row.get("final_train_objective", row.get("final_train_elbo")), ".2f")
        kind = row.get("objective")
        if objective != _NA and kind:
            objective += f" ({kind})"
        cells = [
            _md_cell(label),
            objective,
            _fmt_pm(row.get("test_elbo"), row.get("test_elbo_se")),
            _fmt_pm(row.get("test_iwae"), row.get("test_iwae_se")),
            _fmt(row.get("test_log_likelihood"), ".2f")
            + (" (AIS)" if row.get("test_log_likelihood_method") == "ais" else ""),
            _fmt(row.get("gap_exact_minus_iwae"), ".3f"),
            gap,
            _fmt(row.get("approximation_gap"), ".3f"),
            _fmt(row.get("amortisation_gap"), ".3f"),
            _fmt(row.get("psis_khat_mean"), ".2f"),
            frac_cell,
            _fmt(row.get("train_seconds"), ".1f"),
            _NA if iterations is None else str(int(iterations)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking(metrics: Mapping) -> str:
    """One sentence ranking the converged, non-failed schemes by test IWAE-K (nats per test
    datapoint, best first) and naming the rows left out because they did not converge or
    failed; ``""`` when nothing can be ranked or left out."""
    ranked, left = [], []
    for name, row in _schemes(metrics).items():
        row = row if isinstance(row, Mapping) else {}
        iwae = _num(row.get("test_iwae"))
        if row.get("failed") or iwae is None:
            left.append(f"{name} (failed)" if row.get("failed") else str(name))
        elif row.get("converged") is False:
            left.append(f"{name} (not converged)")
        elif _num(row.get("n_evaluated")) not in (None, _num(metrics.get("n_test"))):
            left.append(f"{name} (scored on a subset)")
        else:
            ranked.append((iwae, str(name)))
    parts = []
    if ranked:
        order = " > ".join(f"{n} ({v:.2f})" for v, n in sorted(ranked, reverse=True))
        parts.append(f"Ranked by test IWAE-K: {order}.")
    if left:
        parts.append(f"Not ranked: {', '.join(left)}.")
    return " ".join(parts)


def _md_link_target(filename: str | os.PathLike, report_dir: Path) -> str:
    p = Path(filename)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(report_dir.resolve())
        except ValueError:
            raise PplGenError(
                f"figure {str(filename)!r} must be a file name relative to the report folder "
                f"{str(report_dir)!r}"
            ) from None
    target = p.as_posix()
    return f"<{target}>" if any(ch in target for ch in " ()<>") else target


def write_report(
    path: PathLike,
    metrics: Mapping,
    figures: Mapping[str, str],
    notes: Sequence[str] = (),
) -> Path:
    """Write the markdown report (``report.md``) of a comparison run, atomically.

    Args:
        path: destination, e.g. ``<out>/report.md``.
        metrics: the ``metrics.json`` schema (see :func:`format_metrics_table`).
        figures: ``{caption: file name relative to the report's folder}``, in display order;
            an absolute path inside that folder is made relative.
        notes: free-text remarks, written as a bullet list.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The report holds the title ``# ppl_gen comparison: <model> on <dataset>``, a setup
    paragraph (n_train, n_test, latent dimension, device, seed, IWAE K), the metrics
    table, a sentence on units and the ELBO <= IWAE-K ordering (Burda et al. 2016), the
    figures as ``![caption](file)`` links and the notes.  Missing setup values read "n/a".

    Raises:
        PplGenError: if ``metrics`` has no ``schemes`` mapping or a figure path is absolute
            and outside the report's folder.
    """
    path = Path(path)
    schemes = _schemes(metrics)

    def setup(key: str) -> str:
        value = metrics.get(key)
        return _NA if value is None else str(value)

    ks = []
    for row in schemes.values():
        k = _num(row.get("iwae_k")) if isinstance(row, Mapping) else None
        if k is not None and int(k) not in ks:
            ks.append(int(k))
    k_text = ", ".join(str(k) for k in ks) if ks else _NA

    parts = [
        f"# ppl_gen comparison: {setup('model')} on {setup('dataset')}",
        "",
        f"Each scheme was trained on {setup('n_train')} training datapoints and evaluated on "
        f"{setup('n_test')} held-out test datapoints, with latent dimension "
        f"{setup('latent_dim')}, on device {setup('device')}, with seed {setup('seed')}. "
        f"The importance-weighted bound uses K = {k_text} importance samples per datapoint.",
        "",
        format_metrics_table(metrics),
        "",
        *([ranking(metrics), ""] if ranking(metrics) else []),
        "All bounds are log-likelihood lower bounds in nats per test datapoint (mean ± standard "
        "error over test datapoints); higher is better. For the same model and guide the "
        "IWAE-K bound is at least the ELBO in expectation and tightens as K grows (Burda et "
        "al. 2016), so IWAE − ELBO measures how loose the ELBO is for that scheme.",
    ]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, filename in figures.items():
            cap = str(caption).replace("[", "\\[").replace("]", "\\]")
            parts += [f"![{cap}]({_md_link_target(filename, path.parent)})", ""]
        parts.pop()
    if notes:
        parts += ["", "## Notes", ""]
        parts += [f"- {' '.join(str(note).split())}" for note in notes]
    return write_text(path, "\n".join(parts) + "\n")
