"""PNG plots of a sweep: gen-PPL vs steps, gen-PPL vs seconds per sequence (Pareto view), entropy vs steps."""

from __future__ import annotations

import math
from pathlib import Path


def _series(rows):
    groups: dict[str, list[dict]] = {}
    seeds = len({r.get("seed") for r in rows}) > 1
    for r in rows:
        if r["method"] == "ar":
            continue
        label = r["method"] if r["method"] == "mdlm" else f"{r['method']} k={r['k']}" + (
            f" w={r['window'][0]:g}-{r['window'][1]:g}" if r.get("window") and r["window"] != [0.0, 1.0] else "")
        label += _settings(r, seeds)
        groups.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r["steps"]) for k, v in groups.items()}


def _settings(r: dict, seeds: bool) -> str:
    """The bench settings of a row that differ from the defaults (unmasking, tau, k policy, min-unmask, seed)."""
    out = [r["unmask"] if r.get("unmask", "random") != "random" else "",
           f"tau={r['temperature']:g}" if r.get("temperature", 1.0) != 1.0 else "",
           "k-policy=ess" if r.get("k_policy", "fixed") != "fixed" else "",
           f"min-unmask={r['min_unmask']}" if r.get("min_unmask", 1) != 1 else "",
           f"seed {r.get('seed')}" if seeds else ""]
    return "".join(f" {o}" for o in out if o)


def plot_sweep(rows: list[dict], out: Path, title: str = "", reference: dict | None = None) -> list[str]:
    """reference: {"label", "gen_ppl"} drawn as a dotted line on the perplexity plots (e.g. the data's own).
    Rows with `gen_nll_ci95` get error bars on the perplexity plots: the 95% bootstrap interval, exp'd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    groups = _series(rows)
    ar = [r for r in rows if r["method"] == "ar"]
    files = []
    for name, x_key, y_key, xlabel, ylabel in (
        ("quality_vs_steps.png", "steps", "gen_ppl", "sampling steps", "generative perplexity"),
        ("quality_vs_time.png", "seconds", "gen_ppl", "seconds per sequence", "generative perplexity"),
        ("entropy_vs_steps.png", "steps", "entropy_nats", "sampling steps", "unigram entropy (nats)"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        for label, rs in groups.items():
            xs, ys = [r[x_key] for r in rs], [r[y_key] for r in rs]
            if y_key == "gen_ppl" and all(r.get("gen_nll_ci95") for r in rs):
                lo = [y - math.exp(r["gen_nll_ci95"][0]) for y, r in zip(ys, rs, strict=True)]
                hi = [math.exp(r["gen_nll_ci95"][1]) - y for y, r in zip(ys, rs, strict=True)]
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
            else:
                ax.plot(xs, ys, marker="o", label=label)
        for r in ar:
            if x_key == "steps":
                ax.axhline(r[y_key], color="gray", ls="--", label="ar")
            else:
                ax.scatter([r[x_key]], [r[y_key]], color="gray", marker="*", s=80, label="ar")
        if reference and y_key == "gen_ppl":
            ax.axhline(reference["gen_ppl"], color="black", ls=":", label=reference["label"])
        ax.set_xscale("log")
        if y_key == "gen_ppl":
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out / name)
        plt.close(fig)
        files.append(str(out / name))
    return files


def figure_format(path: Path) -> str:
    """The image format a path's suffix names (png, pdf, svg ...): an EdlmError for one matplotlib cannot write."""
    from matplotlib.figure import Figure

    from edlm.errors import EdlmError

    fmt = Path(path).suffix.lstrip(".").lower()
    known = Figure().canvas.get_supported_filetypes()
    if fmt not in known:
        raise EdlmError(f"{path}: cannot write a {fmt or 'suffix-less'} image; end the path in .png (or "
                        f"{', '.join('.' + k for k in sorted(known) if k != 'png')})")
    return fmt


def save_figure(fig, path: Path, **kw) -> None:
    """Render to memory, then write atomically (safe_io): no half image, nothing written through a link."""
    import io

    from edlm.safe_io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format=figure_format(path), **kw)
    atomic_write_bytes(path, buf.getvalue())


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl -> (training rows with "loss", validation rows {"step", "val": {...}}). A line cut short
    by a killed process is skipped (training appends line by line, so only the last one can be)."""
    import json

    train, val = [], []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "val" in row:
            val.append(row)
        elif isinstance(row, dict) and "loss" in row:
            train.append(row)
    return train, val


def plot_training_curves(run: Path, out: Path | None = None) -> Path:
    """RUN/metrics.jsonl -> a PNG of the training loss and validation loss by step (plus NCE accuracy when
    the run logs it). Returns the PNG's path (default RUN/curves.png)."""
    from edlm.errors import EdlmError
    from edlm.runs.folder import RUN_ENTRIES
    from edlm.safe_io import check_outputs

    run = Path(run)
    out = Path(out) if out is not None else run / "curves.png"
    # the PNG may go into the run folder (its default does), never over what the run holds
    check_outputs({"`out`": out}, {f"the run's {e}": run / e for e in RUN_ENTRIES})
    figure_format(out)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise EdlmError(f"{run} has no metrics.jsonl: it is not a run folder, or it has not logged a step yet")
    train, val = read_metrics(metrics)
    if not train and not val:
        raise EdlmError(f"{metrics} holds no loss rows yet: plot again after training has logged a step")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = [r for r in train if "nce_accuracy" in r]
    fig, axes = plt.subplots(1, 2 if acc else 1, figsize=(11 if acc else 6, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if val:
        ax.plot([r["step"] for r in val], [r["val"]["loss"] for r in val], "o-", label="validation loss (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(run.name)
    ax.legend()
    ax.grid(alpha=0.3)
    if acc:
        a2 = axes[0][1]
        a2.plot([r["step"] for r in acc], [r["nce_accuracy"] for r in acc], label="train")
        va = [r for r in val if "nce_accuracy" in r["val"]]
        if va:
            a2.plot([r["step"] for r in va], [r["val"]["nce_accuracy"] for r in va], "o-", label="validation")
        a2.set_xlabel("step")
        a2.set_ylabel("NCE accuracy")
        a2.legend()
        a2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)
    return out
