"""Report stage: self-contained HTML pages (figures embedded as PNG) per subject and for the group.

Computing lives in the other stages; this module only draws tables and maps it is given.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555;max-width:900px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px}
.grid{display:flex;flex-wrap:wrap;gap:4px}.grid img{width:260px}"""


def fig_to_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def img_tag(b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def figure(b64: str, caption: str) -> str:
    return f"<figure>{img_tag(b64, caption)}<figcaption>{caption}</figcaption></figure>"


def layer_map_pngs(r_imgs: list[tuple[str, nib.Nifti1Image]], vmax: float) -> list[str]:
    """Glass-brain views of held-out r for each layer, on a shared colour scale."""
    from nilearn import plotting

    out = []
    for layer, img in r_imgs:
        fig = plt.figure(figsize=(5, 2.2))
        plotting.plot_glass_brain(img, figure=fig, colorbar=True, vmin=0, vmax=vmax,
                                  cmap="hot", plot_abs=False, threshold=1e-6,
                                  title=f"layer {int(layer)}", display_mode="lzr")
        out.append(fig_to_b64(fig))
    return out


def best_layer_png(best_img: nib.Nifti1Image, n_layers: int) -> str:
    """Best layer per significant voxel with a categorical colour per layer."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from nilearn import plotting

    colors = plt.get_cmap("turbo", n_layers)(np.arange(n_layers))
    cmap = ListedColormap(colors)
    data = np.asarray(best_img.dataobj).astype(float)
    shown = nib.Nifti1Image(np.where(data >= 0, data + 1, 0), best_img.affine)  # 0 = none
    fig = plt.figure(figsize=(9, 3))
    plotting.plot_glass_brain(shown, figure=fig, axes=(0, 0, 0.88, 1), cmap=cmap, vmin=0.5,
                              vmax=n_layers + 0.5, colorbar=False, plot_abs=False,
                              threshold=0.5, display_mode="lzry")
    ax = fig.add_axes([0.9, 0.1, 0.015, 0.8])
    norm = BoundaryNorm(np.arange(n_layers + 1) - 0.5, n_layers)
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=ax,
                      ticks=np.arange(n_layers))
    cb.set_label("best layer")
    return fig_to_b64(fig)


def profile_png(scores: pd.DataFrame, truth: dict[str, int] | None = None) -> str:
    """Held-out r against layer depth, one line per ROI (CI band when given)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (roi, grp) in enumerate(scores.groupby("roi", sort=False)):
        grp = grp.sort_values("layer")
        color = f"C{i % 10}"
        ax.plot(grp["layer"], grp["mean_r"], "-o", ms=3, color=color, label=roi)
        if "ci_low" in grp:
            ax.fill_between(grp["layer"], grp["ci_low"], grp["ci_high"], color=color, alpha=0.15)
        best = grp.loc[grp["mean_r"].idxmax()]
        ax.plot(best["layer"], best["mean_r"], "*", ms=12, color=color)
        if truth and roi in truth:
            ax.axvline(truth[roi], color=color, ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer (0 = feature encoder)")
    ax.set_ylabel("held-out Pearson r (mean over ROI voxels)")
    ax.legend(fontsize=8, ncol=2)
    return fig_to_b64(fig)


def cka_png(cka: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(cka["layer_a"] + 0.5, cka["linear_cka"], "-o")
    ax.set_xlabel("between layers k and k+1")
    ax.set_ylabel("linear CKA")
    ax.set_ylim(0, 1.02)
    return fig_to_b64(fig)


def alpha_png(alpha_by_layer: list[np.ndarray], layers: list[str]) -> str:
    """Distribution of chosen ridge penalties per layer (log10)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.boxplot([np.log10(a) for a in alpha_by_layer], showfliers=False)
    ax.set_xticks(range(1, len(layers) + 1), [str(int(layer)) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("log10 chosen alpha")
    return fig_to_b64(fig)


def table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)


def page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            + "\n".join(sections) + "</body></html>")


def write_page(path: str | Path, content: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)


def cka_section(cka: pd.DataFrame, model: str) -> str:
    return ("<h2>How different are the layers?</h2>" + figure(
        cka_png(cka), f"Linear CKA between consecutive layers of <b>{html.escape(model)}</b>, "
        "computed on TR-averaged activations over all stimuli (1 = identical up to rotation "
        "and scale). Layers with CKA near 1 cannot be told apart by an encoding model.")
        + table_html(cka))


def layer_distribution_png(best: pd.DataFrame, layers: list[int]) -> str:
    """Bootstrap-over-subjects share of each layer being the group best, one row per ROI.

    ``best`` has ``roi``, ``best_layer`` and ``layer_distribution`` ("layer:share;...")."""
    shares = np.zeros((len(best), len(layers)))
    col = {v: i for i, v in enumerate(layers)}
    for i, dist in enumerate(best["layer_distribution"].fillna("")):
        for item in filter(None, str(dist).split(";")):
            layer, share = item.split(":")
            shares[i, col[int(layer)]] = float(share)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(best) + 1.2))
    im = ax.imshow(shares, aspect="auto", cmap="Greys", vmin=0, vmax=1)
    ax.plot([col[int(v)] for v in best["best_layer"]], range(len(best)), "r*", ms=10)
    ax.set_xticks(range(len(layers)), [str(v) for v in layers])
    ax.set_yticks(range(len(best)), best["roi"])
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, label="share of bootstrap resamples")
    return fig_to_b64(fig)


def selection_bias_png(best: pd.DataFrame) -> str:
    """Per ROI: r of the best layer scored on the data that chose it (naive, biased) next to
    the r on independent data (with its CI when given)."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(best))
    ax.bar(x - 0.2, best["best_r"], 0.4, color="0.7", label="naive: max over layers")
    err = None
    if "independent_ci_low" in best:
        err = np.vstack([best["independent_r"] - best["independent_ci_low"],
                         best["independent_ci_high"] - best["independent_r"]])
    ax.bar(x + 0.2, best["independent_r"], 0.4, yerr=err, color="C0",
           label="independent: chosen and scored on separate data")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, best["roi"], rotation=45, ha="right")
    ax.set_ylabel("held-out r of the best layer")
    ax.legend(fontsize=8)
    return fig_to_b64(fig)


def stat_map_png(img: nib.Nifti1Image, title: str, vmax: float | None = None) -> str:
    """Glass-brain view of a non-negative statistic map (e.g. the noise ceiling)."""
    from nilearn import plotting

    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    shown = nib.Nifti1Image(np.clip(data, 0, None), img.affine)
    if vmax is None:
        vmax = float(max(np.percentile(data[data > 0], 99), 1e-3)) if (data > 0).any() else 1.0
    fig = plt.figure(figsize=(9, 3))
    plotting.plot_glass_brain(shown, figure=fig, colorbar=True, vmin=0, vmax=vmax, cmap="hot",
                              plot_abs=False, threshold=1e-6, title=title, display_mode="lzry")
    return fig_to_b64(fig)


def significance_pivot(scores: pd.DataFrame) -> pd.DataFrame:
    """ROI x layer table of group mean r, ``*`` marking tests significant after FDR."""
    cell = scores.apply(lambda row: f"{row['mean_r']:.3f}" + ("*" if row.get("significant")
                                                              else ""), axis=1)
    table = scores.assign(cell=cell).pivot(index="roi", columns="layer", values="cell")
    table = table.loc[list(dict.fromkeys(scores["roi"]))]
    table.columns = [f"layer {int(c)}" for c in table.columns]
    return table.reset_index()
