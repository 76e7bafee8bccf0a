"""Report figures and pages: real plots of real images, embedded so the page stands alone."""

import base64
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign import report


def _mni_like(values_fn):
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=8)
    data = np.asarray(mask.dataobj) > 0
    vol = np.zeros(data.shape, np.float32)
    vol[data] = values_fn(int(data.sum()))
    return nib.Nifti1Image(vol, mask.affine)


def _is_png(b64: str) -> bool:
    return base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_maps_and_best_layer_map_are_pngs():
    rng = np.random.default_rng(0)
    r_img = _mni_like(lambda n: rng.uniform(0, 0.4, n))
    pngs = report.layer_map_pngs([("00", r_img), ("01", r_img)], vmax=0.4)
    assert len(pngs) == 2 and all(_is_png(p) for p in pngs)
    best = _mni_like(lambda n: rng.integers(-1, 13, n))
    assert _is_png(report.best_layer_png(best, 13))


def test_profile_marks_best_layer_and_page_is_self_contained(tmp_path):
    scores = pd.DataFrame({"roi": ["HG"] * 3 + ["IFG"] * 3, "layer": [0, 1, 2] * 2,
                           "mean_r": [0.3, 0.2, 0.1, 0.05, 0.1, 0.2],
                           "ci_low": 0.0, "ci_high": 0.4})
    b64 = report.profile_png(scores, truth={"HG": 0, "IFG": 2})
    assert _is_png(b64)
    cka = pd.DataFrame({"layer_a": [0, 1], "layer_b": [1, 2], "linear_cka": [0.3, 0.9]})
    html = report.page("sub-01 · model", [report.figure(b64, "caption <b>x</b>"),
                                          report.cka_section(cka, "model")])
    path = tmp_path / "r.html"
    report.write_page(path, html)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("data:image/png;base64,") == 2
    assert "src=\"http" not in text  # nothing fetched from elsewhere
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_alpha_png_handles_layers():
    alphas = [np.full(100, 10.0), np.logspace(0, 5, 100)]
    assert _is_png(report.alpha_png(alphas, ["00", "01"]))


def test_group_statistics_figures_and_significance_table():
    best = pd.DataFrame({"roi": ["HG", "IFG"], "best_layer": [0, 2], "best_r": [0.3, 0.1],
                         "independent_r": [0.28, 0.01], "independent_ci_low": [0.2, -0.05],
                         "independent_ci_high": [0.35, 0.07],
                         "layer_distribution": ["0:0.90;1:0.10", "1:0.40;2:0.60"]})
    assert _is_png(report.layer_distribution_png(best, [0, 1, 2]))
    assert _is_png(report.selection_bias_png(best))
    rng = np.random.default_rng(0)
    assert _is_png(report.stat_map_png(_mni_like(lambda n: rng.uniform(-0.1, 0.6, n)), "c"))
    scores = pd.DataFrame({"roi": ["IFG", "IFG", "HG", "HG"], "layer": [0, 1, 0, 1],
                           "mean_r": [0.01, 0.02, 0.3, 0.2],
                           "significant": [False, False, True, True]})
    table = report.significance_pivot(scores)
    assert table["roi"].tolist() == ["IFG", "HG"]  # ROI order kept
    assert table.loc[1, "layer 0"] == "0.300*" and table.loc[0, "layer 1"] == "0.020"


def test_alpha_table_counts_choices_at_the_grid_edges():
    grid = np.logspace(-1, 6, 8)
    at_top = np.r_[np.full(30, grid[-1]), np.full(70, grid[3])]
    at_bottom = np.r_[np.full(10, grid[0]), np.full(90, grid[4])]
    table = report.alpha_table([at_top, at_bottom], ["00", "03"], grid)
    np.testing.assert_allclose(table["share_at_highest"], [0.3, 0.0])
    np.testing.assert_allclose(table["share_at_lowest"], [0.0, 0.1])
    np.testing.assert_allclose(table["median_log10_alpha"], [2.0, 3.0])
    assert _is_png(report.alpha_png([at_top, at_bottom], ["00", "03"], grid))


def test_comparison_png_draws_paired_subjects():
    peaks = pd.DataFrame({"subject": ["01", "01", "02", "02"], "model": ["a", "b"] * 2,
                          "roi": "HG", "peak_r": [0.3, 0.2, 0.4, 0.35], "peak_layer": 3})
    assert _is_png(report.comparison_png(peaks))


@pytest.fixture(scope="module")
def subject_like_page(tmp_path_factory):
    """A page with every kind of figure the workflow's pages hold, from real NIfTI maps."""
    rng = np.random.default_rng(0)
    r_img = _mni_like(lambda n: np.clip(rng.normal(0.05, 0.1, n), 0, None))
    best = _mni_like(lambda n: rng.integers(-1, 7, n))
    scores = pd.DataFrame({"roi": ["HG"] * 3 + ["IFG"] * 3, "layer": [0, 3, 6] * 2,
                           "mean_r": [0.3, 0.2, 0.1, 0.05, 0.1, 0.2],
                           "ci_low": 0.0, "ci_high": 0.4})
    grid = np.logspace(-1, 6, 8)
    sections = [
        "<div class='grid'>" + "".join(report.img_tag(b, f"layer {i}") for i, b in enumerate(
            report.layer_map_pngs([("00", r_img), ("03", r_img)], 0.3))) + "</div>",
        report.figure(report.best_layer_png(best, 7), "best layer"),
        report.figure(report.profile_png(scores), "profile"),
        report.figure(report.alpha_png([rng.choice(grid, 100)] * 2, ["00", "03"], grid),
                      "alpha"),
        report.interactive_views(r_img, "peak r", 0.3, threshold=0.05),
    ]
    path = tmp_path_factory.mktemp("page") / "page.html"
    report.write_page(path, report.page("sub-01 · test", sections))
    return path


def test_interactive_views_are_self_contained(subject_like_page):
    text = subject_like_page.read_text()
    assert text.count("<iframe") == 2
    assert "brainsprite" in text and "plotly" in text.lower()
    # nothing loaded from elsewhere: no script, image, style or icon of the page or of the
    # iframes' documents points to another server
    import html
    import re

    docs = [text] + [html.unescape(d) for d in re.findall(r'srcdoc="([^"]*)"', text)]
    for doc in docs:
        assert not re.findall(r"""<(?:script|img|link|iframe)[^>]*(?:src|href)=["']?https?:""",
                              doc)


def test_page_loads_in_headless_chromium(subject_like_page, tmp_path):
    """Every figure decodes (naturalWidth > 0), the 3D surface draws, no console errors."""
    from browser import find_chromium, load_page

    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    shot = Path(os.environ.get("BRAINALIGN_ARTIFACTS", tmp_path)) / "report_page.png"
    result = load_page(subject_like_page, shot)
    print(f"screenshot: {result.screenshot}")
    assert result.errors == [], result.errors
    assert result.iframes == 2 and result.plots == 1
    assert len(result.images) >= 7  # 2 maps, best layer, profile, alpha, 3 slice-viewer sprites
    assert all(img["complete"] and img["width"] > 0 for img in result.images), result.images
    assert shot.stat().st_size > 10_000


PAGES = ["results/sub-01/report/sub-01_model-wav2vec2-random.html",
         "results/group/wav2vec2-random/group_report.html",
         "results/group/model_comparison.html"]


@pytest.mark.slow
def test_workflow_pages_hold_every_figure(tiny_two_model_run):
    subject, group, comparison = (tiny_two_model_run / p for p in PAGES)
    text = subject.read_text()
    for heading in ("Best-layer map", "Held-out r maps per layer", "Interactive views",
                    "Regularisation", "r against layer"):
        assert heading in text, heading
    assert text.count("data:image/png;base64,") >= 3 + 3  # 3 layer maps + best, profile, alpha
    assert "share_at_highest" in text
    text = group.read_text()
    for heading in ("Group best-layer map", "Group r maps per layer", "Interactive views",
                    "95% t-confidence"):
        assert heading in text, heading
    table = pd.read_csv(tiny_two_model_run / "results/group/model_comparison.tsv", sep="\t")
    assert set(table["roi"]) >= {"HG", "PT", "STGp", "MTGp", "IFG"}
    assert (table["n_subjects"] == 2).all()
    assert (table["model_a"] == "wav2vec2-random").all()
    assert "Paired statistics across subjects" in comparison.read_text()
    report_html = (tiny_two_model_run / "report.html").read_text()
    assert "model_comparison.html" in report_html and "group_report.html" in report_html


@pytest.mark.slow
def test_workflow_pages_load_in_headless_chromium(tiny_two_model_run, tmp_path):
    from browser import find_chromium, load_page

    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    out = Path(os.environ.get("BRAINALIGN_ARTIFACTS", tmp_path))
    for page in [*PAGES, "report.html"]:
        shot = out / (Path(page).stem + ".png")
        result = load_page(tiny_two_model_run / page, shot)
        print(f"{page}: {len(result.images)} images, {result.iframes} iframes, "
              f"{result.plots} 3D plots, screenshot {shot}")
        assert result.errors == [], (page, result.errors)
        assert all(img["complete"] and img["width"] > 0 for img in result.images), page
        if page != "report.html":
            assert result.images, page


def test_profile_star_sits_on_the_tables_reliable_best_layer():
    # the profile peaks at layer 2 for HG, but the cross-fitted table chose layer 1: the star
    # goes where the table says; an ROI without a reliable best layer gets none
    scores = pd.DataFrame({"roi": ["HG"] * 3 + ["V1"] * 3, "layer": [0, 1, 2] * 2,
                           "mean_r": [0.10, 0.20, 0.21, 0.01, 0.03, 0.02]})
    best = pd.DataFrame({"roi": ["HG", "V1"], "best_layer": [1, 1], "naive_layer": [2, 1],
                         "reliable": [True, False], "equivalent_layers": ["1,2", "1"],
                         "note": ["", "no significant layer (q = 0.6 > 0.05)"]})
    assert report.profile_stars(scores, best) == {"HG": (1, 0.20)}
    assert report.profile_stars(scores, None) == {}  # no table, no claim
    read_back = best.assign(reliable=["True", "False"])  # as a TSV written elsewhere holds it
    assert report.profile_stars(scores, read_back) == {"HG": (1, 0.20)}
    assert _is_png(report.profile_png(scores, best=best))
    shown = report.best_layer_display(best, ["roi", "best_layer", "reliable"])
    assert shown["claim"].tolist() == ["layer 1 (indistinguishable from 2)",
                                       "no reliable best layer: no significant layer "
                                       "(q = 0.6 > 0.05)"]
    assert shown["best_layer"].tolist() == ["1", "(1)"]  # an estimate only


def test_surface_best_layer_map_on_the_inflated_cortex():
    """fsaverage5 maps are drawn as they are; an fsaverage6 map is drawn on its first 10242
    vertices (fsaverage5's): the same picture as the fsaverage5 map it extends; other meshes
    are refused."""
    from PIL import Image

    rng = np.random.default_rng(0)
    n5, n6 = 10242, 40962
    left, right = (np.where(rng.random(n5) < 0.3, rng.integers(0, 7, n5), -1)
                   for _ in range(2))
    b64 = report.surface_best_layer_png(left, right, 7)
    assert _is_png(b64)
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert img.size[0] > 600 and img.size[1] > 150
    # coloured, not just the grey cortex: some pixels are far from grey
    rgb = np.asarray(img.convert("RGB"), dtype=float)
    assert (rgb.max(-1) - rgb.min(-1) > 80).mean() > 0.01
    dense = [np.concatenate([h, rng.integers(-1, 7, n6 - n5)]) for h in (left, right)]
    assert report.surface_best_layer_png(*dense, 7) == b64
    assert "fsaverage6" in report.surface_drawable(n6)
    assert report.surface_drawable(32492) is None
    with pytest.raises(ValueError, match="32492 vertices"):
        report.surface_best_layer_png(np.zeros(32492), np.zeros(32492), 7)
