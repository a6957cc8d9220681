"""PNG plots of a sweep: gen-PPL vs steps, gen-PPL vs seconds per sequence (Pareto view), entropy vs steps."""

from __future__ import annotations

from pathlib import Path


def _series(rows):
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == "ar":
            continue
        label = r["method"] if r["method"] == "mdlm" else f"{r['method']} k={r['k']}" + (
            f" w={r['window'][0]:g}-{r['window'][1]:g}" if r.get("window") and r["window"] != [0.0, 1.0] else "")
        groups.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r["steps"]) for k, v in groups.items()}


def plot_sweep(rows: list[dict], out: Path, title: str = "", reference: dict | None = None) -> list[str]:
    """reference: {"label", "gen_ppl"} drawn as a dotted line on the perplexity plots (e.g. the data's own)."""
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
            ax.plot([r[x_key] for r in rs], [r[y_key] for r in rs], marker="o", label=label)
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
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(out / name)
        files.append(str(out / name))
    return files
