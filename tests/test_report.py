"""Report figures and pages: real plots of real images, embedded so the page stands alone."""

import base64

import nibabel as nib
import numpy as np
import pandas as pd

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
