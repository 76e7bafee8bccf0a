"""Report stage: self-contained HTML pages (figures embedded as PNG) per subject and for the group.

Computing lives in the other stages; this module only draws tables and maps it is given.
"""

from __future__ import annotations

import base64
import functools
import gc
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.9em;color:#555;max-width:900px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px}
.grid{display:flex;flex-wrap:wrap;gap:4px}.grid img{width:260px}
iframe{border:1px solid #ddd;width:100%;max-width:1000px}"""


@functools.cache
def _plotting():
    """``nilearn.plotting``, imported on first use; every object then alive is moved out of
    the garbage collector's reach (``gc.freeze``): nilearn reads image data through
    ``safe_get_data``, which calls ``gc.collect()`` on every read, and rescanning the modules
    of matplotlib, nilearn and scikit-learn took ~0.2 s a call, 40 % of a subject report."""
    from nilearn import plotting

    gc.freeze()
    return plotting


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
    plotting = _plotting()

    out = []
    for layer, img in r_imgs:
        fig = plt.figure(figsize=(5, 2.2))
        plotting.plot_glass_brain(img, figure=fig, colorbar=True, vmin=0, vmax=vmax,
                                  cmap="hot", plot_abs=False, threshold=1e-6,
                                  title=f"layer {int(layer)}: held-out r",
                                  display_mode="lzr")
        out.append(fig_to_b64(fig))
    return out


def layer_colors(n_layers: int) -> np.ndarray:
    """One colour per layer, (n_layers, 4) RGBA: a categorical cut of ``turbo`` (neighbouring
    colours are neighbouring layers), shared by the volume and surface best-layer maps."""
    return plt.get_cmap("turbo", n_layers)(np.arange(n_layers))


def _layer_colorbar(fig, rect: list[float], n_layers: int) -> None:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    ax = fig.add_axes(rect)
    norm = BoundaryNorm(np.arange(n_layers + 1) - 0.5, n_layers)
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=ListedColormap(layer_colors(
        n_layers))), cax=ax, ticks=np.arange(n_layers))
    cb.set_label("best layer")


def best_layer_png(best_img: nib.Nifti1Image, n_layers: int) -> str:
    """Best layer per significant voxel with a categorical colour per layer."""
    from matplotlib.colors import ListedColormap
    plotting = _plotting()

    cmap = ListedColormap(layer_colors(n_layers))
    data = np.asarray(best_img.dataobj).astype(float)
    shown = nib.Nifti1Image(np.where(data >= 0, data + 1, 0), best_img.affine)  # 0 = none
    fig = plt.figure(figsize=(9, 3))
    plotting.plot_glass_brain(shown, figure=fig, axes=(0, 0, 0.88, 1), cmap=cmap, vmin=0.5,
                              vmax=n_layers + 0.5, colorbar=False, plot_abs=False,
                              threshold=0.5, display_mode="lzry")
    _layer_colorbar(fig, [0.9, 0.1, 0.015, 0.8], n_layers)
    return fig_to_b64(fig)


#: vertices per hemisphere of fsaverage5, the one fsaverage mesh nilearn ships (no download)
FSAVERAGE5_VERTICES = 10242
#: the surface views drawn, left to right: (hemisphere, view)
SURFACE_VIEWS = (("left", "lateral"), ("left", "medial"), ("right", "medial"),
                 ("right", "lateral"))


def surface_drawable(n_vertices: int) -> str | None:
    """How a map with ``n_vertices`` per hemisphere is drawn on fsaverage5's inflated mesh, for
    captions: "" on fsaverage5 itself, a sentence on the denser fsaverage meshes (their first
    10242 vertices are fsaverage5's: FreeSurfer's icosahedral meshes are nested), None on any
    other surface (not drawable: only fsaverage5 is packaged)."""
    from .surface import DENSITIES

    if n_vertices == FSAVERAGE5_VERTICES:
        return ""
    if n_vertices in DENSITIES:
        return (f"The data are on {DENSITIES[n_vertices]} ({n_vertices} vertices per "
                f"hemisphere); drawn are its first {FSAVERAGE5_VERTICES}, which are fsaverage5's "
                "vertices (FreeSurfer's icosahedral meshes are nested), on fsaverage5's mesh: "
                "every value shown is a value of the map, the vertices between them are not "
                "shown.")
    return None


def _face_label(values: np.ndarray) -> float:
    """A face's colour from its vertices' labels (0 = none): the most frequent label among the
    labelled vertices, so that a lone labelled vertex still shows (the median of nilearn's
    default would hide it)."""
    labelled = values[values > 0]
    if not labelled.size:
        return 0.0
    found, counts = np.unique(labelled, return_counts=True)
    return float(found[counts.argmax()])


def surface_best_layer_png(left: np.ndarray, right: np.ndarray, n_layers: int,
                           title: str | None = None) -> str:
    """Best layer per vertex on fsaverage5's inflated cortex: left lateral, left medial, right
    medial and right lateral views, sulcal depth in grey where no layer is shown, the layer
    colours of :func:`best_layer_png`.

    Parameters
    ----------
    left, right : int arrays of shape (n_vertices,), the layer of each vertex, -1 where none;
        on fsaverage5 or a denser fsaverage mesh, whose first 10242 vertices are drawn
        (:func:`surface_drawable`)
    n_layers : layers 0 .. n_layers - 1 get a colour each
    """
    import warnings

    from matplotlib.colors import ListedColormap
    plotting = _plotting()
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    values = {}
    for side, arr in (("left", left), ("right", right)):
        arr = np.asarray(arr)
        if surface_drawable(arr.size) is None:
            raise ValueError(f"{side} hemisphere: {arr.size} vertices is not an fsaverage mesh "
                             "(fsaverage5, fsaverage6 or fsaverage); only those can be drawn.")
        # layer k -> k + 1, so that 0 (no layer) falls below the threshold and shows the cortex
        values[side] = np.where(arr[:FSAVERAGE5_VERTICES] >= 0,
                                arr[:FSAVERAGE5_VERTICES] + 1, 0).astype(float)
    mesh = load_fsaverage("fsaverage5")["inflated"]
    sulcal = load_fsaverage_data(mesh="fsaverage5", data_type="sulcal", mesh_type="inflated")
    cmap = ListedColormap(layer_colors(n_layers))
    fig = plt.figure(figsize=(12, 3.2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's notes on meshes and colour maps
        for i, (side, view) in enumerate(SURFACE_VIEWS):
            ax = fig.add_axes([0.22 * i, 0.0, 0.22, 0.9], projection="3d")
            plotting.plot_surf_roi(mesh.parts[side], roi_map=values[side],
                                   bg_map=sulcal.data.parts[side], hemi=side, view=view,
                                   cmap=cmap, vmin=0.5, vmax=n_layers + 0.5, threshold=0.5,
                                   avg_method=_face_label, colorbar=False, axes=ax,
                                   figure=fig)
            ax.set_title(f"{side} {view}", fontsize=10)
    _layer_colorbar(fig, [0.9, 0.12, 0.012, 0.7], n_layers)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig_to_b64(fig)


def surface_best_layer_figure(paths: list[str | Path], n_layers: int, caption: str) -> str:
    """A best-layer GIFTI pair (left, right; -1 where no layer) drawn on the inflated cortex
    (:func:`surface_best_layer_png`) with ``caption`` and how the surface was drawn; on a
    surface other than fsaverage, a paragraph saying why it is not drawn."""
    left, right = (np.asarray(nib.load(str(p)).darrays[0].data) for p in paths)
    how = surface_drawable(left.size)
    if how is None:
        return (f"<p>Not drawn on the cortex: {left.size} vertices per hemisphere is not an "
                "fsaverage mesh, and fsaverage5's is the only one packaged; the GIFTI files hold "
                "the map.</p>")
    n_shown = int((left[:FSAVERAGE5_VERTICES] >= 0).sum()
                  + (right[:FSAVERAGE5_VERTICES] >= 0).sum())
    return figure(surface_best_layer_png(left, right, n_layers),
                  f"{caption} {n_shown} vertices coloured. {how}".strip())


def profile_stars(scores: pd.DataFrame, best: pd.DataFrame | None) -> dict[str, tuple[int, float]]:
    """Where the r-vs-layer profile puts each ROI's star: {roi: (layer, r)}.

    The star marks the best layer of ``best`` (the best-layer table: a subject's cross-fitted
    choice, or the group's), at the profile's r for that layer, and only for ROIs whose best
    layer is ``reliable``; never the naive maximum of the plotted profile. No stars without
    ``best``."""
    if best is None:
        return {}
    stars = {}
    rows = best.set_index("roi")
    for roi, grp in scores.groupby("roi", sort=False):
        if roi not in rows.index or not _is_reliable(rows.loc[roi]):
            continue
        layer = int(rows.loc[roi, "best_layer"])
        at = grp.loc[grp["layer"].astype(int) == layer, "mean_r"]
        if len(at):
            stars[roi] = (layer, float(at.iloc[0]))
    return stars


def _is_reliable(row: pd.Series) -> bool:
    value = row.get("reliable", False)
    if isinstance(value, str):  # read back from a TSV written elsewhere
        return value.strip().lower() == "true"
    return bool(value) if pd.notna(value) else False


def profile_png(scores: pd.DataFrame, truth: dict[str, int] | None = None,
                best: pd.DataFrame | None = None) -> str:
    """Held-out r against layer depth, one line per ROI (CI band when given).

    With ``best`` (a best-layer table with ``roi``, ``best_layer``, ``reliable``): a star on
    each reliable ROI's best layer (:func:`profile_stars`); ROIs without a reliable best layer
    are drawn faded and dashed and labelled so."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    stars = profile_stars(scores, best)
    rows = None if best is None else best.set_index("roi")
    for i, (roi, grp) in enumerate(scores.groupby("roi", sort=False)):
        grp = grp.sort_values("layer")
        color = f"C{i % 10}"
        faded = rows is not None and (roi not in rows.index or not _is_reliable(rows.loc[roi]))
        label = f"{roi} (no reliable best layer)" if faded else roi
        ax.plot(grp["layer"], grp["mean_r"], "--o" if faded else "-o", ms=3, color=color,
                alpha=0.35 if faded else 1.0, label=label)
        if "ci_low" in grp:
            ax.fill_between(grp["layer"], grp["ci_low"], grp["ci_high"], color=color,
                            alpha=0.06 if faded else 0.15)
        if roi in stars:
            ax.plot(*stars[roi], "*", ms=14, color=color, markeredgecolor="k", mew=0.6)
        if truth and roi in truth:
            ax.axvline(truth[roi], color=color, ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer (0 = feature encoder)")
    ax.set_ylabel("held-out Pearson r (unitless; mean over ROI voxels)")
    ax.legend(fontsize=8, ncol=2)
    return fig_to_b64(fig)


def verdict(best: pd.DataFrame) -> list[str]:
    """Per ROI of a best-layer table, what may be claimed: "layer 6", "layer 6 (as good: 5, 7)"
    where CKA cannot tell neighbours apart, or "no reliable best layer: <why>"."""
    out = []
    for _, row in best.iterrows():
        if not _is_reliable(row):
            note = row.get("note", "")
            note = note if isinstance(note, str) and note else "not tested"
            out.append(f"no reliable best layer: {note}")
            continue
        layer = int(row["best_layer"])
        same = row.get("equivalent_layers", "")
        same = str(int(same)) if isinstance(same, float) and np.isfinite(same) else str(same)
        others = [int(v) for v in same.split(",") if v.strip().isdigit() and int(v) != layer]
        out.append(f"layer {layer}" + (f" (indistinguishable from {_ranges(others)})"
                                       if others else ""))
    return out


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> "1-3, 5, 7-8"."""
    parts: list[list[int]] = []
    for v in sorted(values):
        if parts and v == parts[-1][-1] + 1:
            parts[-1].append(v)
        else:
            parts.append([v])
    return ", ".join(f"{p[0]}-{p[-1]}" if len(p) > 1 else str(p[0]) for p in parts)


def best_layer_display(best: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The best-layer table as shown: a ``claim`` column (:func:`verdict`) after ``roi``, then
    ``columns`` that exist; unreliable ROIs' ``best_layer`` in brackets, an estimate only."""
    shown = best[[c for c in columns if c in best]].copy()
    if "best_layer" in shown:
        shown["best_layer"] = [str(int(v)) if _is_reliable(row) else f"({int(v)})"
                               for v, (_, row) in zip(best["best_layer"], best.iterrows(),
                                                      strict=True)]
    shown.insert(1 if "roi" in shown else 0, "claim", verdict(best))
    return shown


def cka_png(cka: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(cka["layer_a"] + 0.5, cka["linear_cka"], "-o")
    ax.set_xlabel("between layers k and k+1")
    ax.set_ylabel("linear CKA (unitless, 0 to 1)")
    ax.set_ylim(0, 1.02)
    return fig_to_b64(fig)


def alpha_table(alpha_by_layer: list[np.ndarray], layers: list[str],
                grid: np.ndarray) -> pd.DataFrame:
    """Per layer: median chosen penalty and the share of choices at either end of the grid.

    Parameters
    ----------
    alpha_by_layer : per layer, array of chosen penalties (any shape, e.g. (n_folds, n_voxels))
    grid : array of shape (n_alphas,), the penalties that were searched
    """
    lo, hi = float(np.min(grid)), float(np.max(grid))
    rows = []
    for layer, a in zip(layers, alpha_by_layer, strict=True):
        a = np.asarray(a, dtype=np.float64).ravel()
        rows.append({"layer": int(layer), "median_log10_alpha": float(np.median(np.log10(a))),
                     "share_at_lowest": float(np.isclose(a, lo, rtol=1e-4).mean()),
                     "share_at_highest": float(np.isclose(a, hi, rtol=1e-4).mean())})
    return pd.DataFrame(rows)


def alpha_png(alpha_by_layer: list[np.ndarray], layers: list[str],
              grid: np.ndarray | None = None) -> str:
    """Share of voxels (x folds) choosing each penalty of the grid, one row per layer."""
    if grid is None:
        grid = np.unique(np.concatenate([np.ravel(a) for a in alpha_by_layer]))
    log_grid = np.log10(np.asarray(grid, dtype=np.float64))
    shares = np.stack([
        (np.abs(np.log10(np.ravel(a))[:, None] - log_grid[None]) < 1e-3).mean(0)
        for a in alpha_by_layer])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(layers) + 1.5))
    im = ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0, origin="lower",
                   extent=(log_grid[0] - 0.5 * np.diff(log_grid[:2]).sum(),
                           log_grid[-1] + 0.5 * np.diff(log_grid[-2:]).sum(),
                           -0.5, len(layers) - 0.5))
    ax.set_yticks(range(len(layers)), [str(int(layer)) for layer in layers])
    ax.set_xlabel("log10 ridge penalty alpha (penalty in units of the standardised features)")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="share of voxel x fold choices")
    return fig_to_b64(fig)


def _iframe(view, width: int, height: int) -> str:
    """A nilearn view as an iframe holding its whole page (``srcdoc``); the favicon nilearn
    links on GitHub is dropped so that nothing is fetched from elsewhere."""
    import re

    standalone = re.sub(r"<link[^>]*rel=.icon[^>]*>", "", view.get_standalone())
    return (f'<iframe srcdoc="{html.escape(standalone)}" width="{width}" height="{height}" '
            'frameBorder="0"></iframe>')


def interactive_views(img: nib.Nifti1Image, title: str, vmax: float, threshold: float) -> str:
    """Two interactive views of a volume map as self-contained iframes: slices (nilearn
    ``view_img``) and the fsaverage5 inflated surface (``view_surf`` of the map projected with
    ``vol_to_surf`` between the white and pial surfaces; both hemispheres)."""
    import warnings

    plotting = _plotting()
    from nilearn.datasets import load_fsaverage, load_fsaverage_data
    from nilearn.surface import SurfaceImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's notes on mesh identity and masked arrays
        slices = plotting.view_img(img, threshold=threshold, vmax=vmax, cmap="hot",
                                   symmetric_cmap=False, title=title, colorbar=True)
        fsaverage = load_fsaverage("fsaverage5")
        surf_map = SurfaceImage.from_volume(mesh=fsaverage["pial"], volume_img=img,
                                            inner_mesh=fsaverage["white_matter"])
        sulcal = load_fsaverage_data(mesh="fsaverage5", data_type="sulcal",
                                     mesh_type="inflated")
        surface = plotting.view_surf(surf_mesh=fsaverage["inflated"], surf_map=surf_map,
                                     bg_map=sulcal, hemi="both", threshold=threshold,
                                     vmax=vmax, vmin=0, cmap="hot", symmetric_cmap=False,
                                     title=title, title_fontsize=14, colorbar_fontsize=12)
    return _iframe(slices, 980, 420) + _iframe(surface, 980, 520)


def comparison_png(peaks: pd.DataFrame) -> str:
    """Per ROI, each subject's peak r under each model, lines joining a subject's models."""
    models = list(dict.fromkeys(peaks["model"]))
    rois = list(dict.fromkeys(peaks["roi"]))
    fig, ax = plt.subplots(figsize=(min(12, max(6, 0.8 * len(rois) * len(models))), 4))
    width = 0.8 / len(models)
    for ri, roi in enumerate(rois):
        sub = peaks[peaks["roi"] == roi].pivot_table(index="subject", columns="model",
                                                     values="peak_r")[models]
        xs = ri + (np.arange(len(models)) - (len(models) - 1) / 2) * width
        for _, row in sub.iterrows():
            ax.plot(xs, row.to_numpy(), "-", color="0.6", lw=0.8)
        for mi, model in enumerate(models):
            ax.plot([xs[mi]] * len(sub), sub[model], "o", ms=4, color=f"C{mi}",
                    label=model if ri == 0 else None)
            ax.plot([xs[mi] - width / 3, xs[mi] + width / 3], [sub[model].mean()] * 2, "-",
                    color=f"C{mi}", lw=2.5)
    ax.set_xticks(range(len(rois)), rois)
    ax.set_xlabel("ROI")
    ax.set_ylabel("peak held-out r over layers (unitless)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    return fig_to_b64(fig)


def table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)


def page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            + "\n".join(sections) + "</body></html>")


def write_page(path: str | Path, content: str) -> None:
    """An HTML page, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(content, encoding="utf-8")


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
    # stars only where a best layer may be claimed
    ok = [i for i, (_, row) in enumerate(best.iterrows())
          if "reliable" not in best or _is_reliable(row)]
    ax.plot([col[int(best["best_layer"].iloc[i])] for i in ok], ok, "r*", ms=10)
    ax.set_yticks(range(len(best)), [r if i in ok else f"{r} (no reliable best layer)"
                                     for i, r in enumerate(best["roi"])])
    ax.set_xticks(range(len(layers)), [str(v) for v in layers])
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
    labels = [roi if "reliable" not in best or _is_reliable(row) else f"{roi} (not reliable)"
              for roi, (_, row) in zip(best["roi"], best.iterrows(), strict=True)]
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylabel("held-out r of the best layer")
    ax.legend(fontsize=8)
    return fig_to_b64(fig)


def stat_map_png(img: nib.Nifti1Image, title: str, vmax: float | None = None) -> str:
    """Glass-brain view of a non-negative statistic map (e.g. the noise ceiling)."""
    plotting = _plotting()

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
