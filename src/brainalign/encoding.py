"""Encoding stage: ridge regression from one layer's features to every voxel, scored on held-out
runs.

Outer cross-validation leaves one run out. Inside the training runs, a second leave-one-run-out
loop picks each voxel's ridge penalty from a log grid (by validation R², summed over inner
folds, on every ``inner_stride``-th validation volume; every 2nd penalty first, then the
neighbours of the best ones: ``alpha_search``); the model is refitted on all training
runs with that penalty and scored on the held-out run (Pearson r and R²). Everything fitted
on data is fitted on the training split of each loop only: the feature standardisation and,
when confounds are given, the confound regression of the BOLD (betas from the training runs,
applied to the held-out run).

Speed: one eigendecomposition of the training Gram matrix per split (float64, on CPU with
LAPACK or on the GPU), shared by every penalty and every voxel. Each split's ridge problem then
reduces to small "hat" matrices that map training BOLD to held-out predictions, one per penalty;
stacked, they meet the BOLD in one float32 matrix product per voxel batch (numpy or torch,
CPU or CUDA). Weights are never formed: the refit only needs the held-out predictions.

Significance: the whole outer loop is refitted ``n_permutations`` times on BOLD circularly
shifted within each run (uniformly over all shifts by default), which breaks the stimulus-BOLD link
but keeps each series' autocorrelation and the dependence between folds that share training runs
(ignoring it, as per-fold shift nulls do, gave 13% false positives at p < 0.05 on pure noise).
The draws share their work: each run has ``k`` candidate shifts (``k`` ~ sqrt(2 n_permutations))
combined as an orthogonal array (``stats.shift_design``: two draws share at most one run's
shift), and a refit's prediction is a sum of per-run products, so the null costs ``k`` refits;
each draw still equals its own full refit (``_null_draws``).
The statistic tested is the held-out r at one penalty common to all voxels of the layer (chosen
per outer fold by the inner CV summed over voxels, Huth et al. 2016): the null refits cannot
redo each voxel's own penalty search, and a penalty tuned to one voxel's noise but kept fixed
for its null draws makes the observed r unlike them (p < 0.05 for 3.5-4.4 % of noise voxels and
a skewed null on smooth noise, against 4.5-5.3 % with a common penalty; tests/test_encoding.py).
The reported scores (``r``, the best layer) keep each voxel's own penalty. p-values:
``stats.null_p`` (each voxel's null location and scale, the null's shape pooled over voxels).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import eigh
from threadpoolctl import ThreadpoolController

from .alignment import seconds_to_volumes
from .stats import (
    ShiftDesign,
    column_dot,
    null_p,
    pearson_r,
    r2_score,
    shift_design,
    total_ss,
    zscore_time,
)

log = logging.getLogger(__name__)
_THREADPOOLS: list[ThreadpoolController] = []
#: voxels per matrix product unless configured (``encoding.batch_voxels`` in the schema)
BATCH_VOXELS = 20_000
#: training sets of at least this many volumes are decomposed on every thread
LARGE_GRAM = 1024
#: folds of at least this many volumes have the inner CV score every 2nd validation volume
#: under ``inner_stride: auto`` (checked on 300-volume runs: the same penalty for 98 % of
#: voxels and folds; on 50-volume blocks a planted layer's group best layer moved)
LONG_RUN = 300
#: ``alpha_search: refine`` keeps the held-out hats of the penalties it scores second within
#: this many bytes (more: the whole grid is scored at once, as ``grid``)
REFINE_BYTES = 2**30


def _threadpools() -> ThreadpoolController:
    """The process's BLAS/OpenMP thread pools (built once: it is slow)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0]


def _one_thread() -> Any:
    """Context limiting BLAS/LAPACK to one thread."""
    return _threadpools().limit(limits=1)


def _chunk_workers(be: Backend) -> int:
    """Voxel chunks worked on at once: on numpy, one per BLAS thread (the cores the job may
    use), each chunk's products then on one thread; 1 on torch, which parallelises itself."""
    if be.name != "numpy":
        return 1
    return max([1, *(lib.num_threads for lib in _threadpools().lib_controllers
                     if lib.user_api == "blas")])


def _for_chunks(work: Callable[[slice], None], chunks: list[slice], workers: int) -> None:
    """``work`` on every chunk of voxels: in order, or on ``workers`` threads with BLAS on one
    thread each when there are several chunks. Chunks of batched small products (the null's)
    keep every core busy that way, not one BLAS thread handing tiny products to the other
    (and numpy's elementwise steps, single-threaded, run side by side): the null 1.50-1.71 ->
    1.28-1.35 ms per voxel on 2 cores, interleaved in one process (benchmarks/ridge.py --scale
    problem). ``work`` writes only its own voxels' results."""
    if workers <= 1 or len(chunks) <= 1:
        for cols in chunks:
            work(cols)
        return
    with _one_thread(), ThreadPoolExecutor(min(workers, len(chunks))) as pool:
        for _ in pool.map(work, chunks):
            pass


@dataclass
class LayerScores:
    """Held-out scores of one layer for every voxel.

    Attributes
    ----------
    r : (n_voxels,) Pearson r between prediction and BOLD, averaged over held-out runs.
    r_folds : (n_folds, n_voxels) r of each held-out run.
    r2 : (n_voxels,) held-out R², averaged over runs.
    alpha : (n_folds, n_voxels) penalty chosen by inner CV in each outer fold.
    r_common : (n_voxels,) held-out r at the layer's common penalty (``alpha_common``),
        averaged over held-out runs: the statistic the permutation test is about.
    alpha_common : (n_folds,) the penalty common to all voxels in each outer fold (inner CV
        summed over voxels, training runs only).
    null_mean, null_std : (n_voxels,) moments of the circular-shift null of ``r_common``.
    p : (n_voxels,) one-sided p-value of ``r_common`` against that null.
    inner_r2 : (n_folds, n_voxels) inner-CV validation R² at the chosen penalty, computed on
        each outer fold's training runs only: a score independent of the held-out run, for
        choosing between layers without double dipping (see ``stats.crossfit_best_layer``).
    r_null : (n_permutations, n_voxels) float32 null draws of ``r_common``; draw j of every
        voxel (and of every layer, whose shifts share the seed) is the same circular shift, so
        ROI means of a draw keep the voxels' dependence (``rois.roi_null_draws``).
    """

    r: np.ndarray
    r_folds: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    p: np.ndarray
    inner_r2: np.ndarray
    r_null: np.ndarray
    r_common: np.ndarray
    alpha_common: np.ndarray


@dataclass
class CVScores:
    """Result of the nested cross-validation (no null).

    Attributes
    ----------
    alpha : (n_folds, n_voxels) penalty chosen by inner CV in each outer fold.
    r_folds, r2_folds : (n_folds, n_voxels) held-out Pearson r and R² of each outer fold.
    inner_r2 : (n_folds, n_voxels) inner-CV validation R² at the chosen penalty (mean over the
        inner folds), from each outer fold's training runs only.
    alpha_common : (n_folds,) the one penalty with the best inner-CV R² summed over voxels.
    r_common_folds : (n_folds, n_voxels) held-out r of each outer fold at ``alpha_common``.
    """

    alpha: np.ndarray
    r_folds: np.ndarray
    r2_folds: np.ndarray
    inner_r2: np.ndarray
    alpha_common: np.ndarray
    r_common_folds: np.ndarray


# ------------------------------------------------------------------------------- backends
class Backend:
    """Where the voxel-sized matrix products run: ``numpy`` (CPU) or ``torch`` (CPU or CUDA).

    Decompositions are small (training volumes squared) and run in float64; only the products
    with BOLD, whose size grows with the voxels, run here, in ``dtype``.
    """

    def __init__(self, name: str = "auto", dtype: Any = np.float32) -> None:
        if name not in ("auto", "numpy", "torch", "torch-cpu", "torch-cuda"):
            raise ValueError(f"unknown encoding backend {name!r}; use auto, numpy, torch, "
                             "torch-cpu or torch-cuda.")
        self.device = "cpu"
        if name in ("auto", "torch", "torch-cuda"):
            cuda = _cuda_available()
            if name == "torch-cuda" and not cuda:
                raise ValueError("encoding backend torch-cuda requested but CUDA is not "
                                 "available; use backend: auto.")
            if name == "auto":
                name = "torch" if cuda else "numpy"
            if name.startswith("torch"):
                self.device = "cuda" if cuda and name != "torch-cpu" else "cpu"
        self.name = "numpy" if name == "numpy" else "torch"
        self.dtype = np.dtype(dtype)
        if self.name == "torch":
            import torch

            self._torch = torch
            self._tdtype = torch.float32 if self.dtype == np.float32 else torch.float64

    def __repr__(self) -> str:
        return f"{self.name}-{self.device} ({self.dtype})"

    def put(self, a: np.ndarray) -> Any:
        """A host array as a backend array of the compute dtype."""
        if self.name == "numpy":
            return np.ascontiguousarray(a, dtype=self.dtype)
        return self._torch.as_tensor(np.ascontiguousarray(a), device=self.device,
                                     dtype=self._tdtype)

    def get(self, a: Any) -> np.ndarray:
        """A backend array back on the host, as numpy."""
        if self.name == "numpy":
            return a
        return a.cpu().numpy()

    def index(self, idx: np.ndarray) -> Any:
        if self.name == "numpy":
            return idx
        return self._torch.as_tensor(idx, device=self.device)

    def cat(self, arrays: list[Any], axis: int = 0) -> Any:
        """Backend arrays concatenated along ``axis``."""
        if self.name == "numpy":
            return np.concatenate(arrays, axis=axis)
        return self._torch.cat(arrays, dim=axis)


class _Bold:
    """The BOLD runs where the voxel-sized products run. On a torch backend each run is moved
    there once (on the CPU a float32 run is shared, not copied; on a GPU the whole fit then
    reads it from device memory); on numpy the rows a product needs are copied from the host
    arrays per use, never held for all voxels, so peak memory is the input BOLD plus one
    batch's work (the copy is cheap next to the product it feeds)."""

    def __init__(self, y_runs: list[np.ndarray], be: Backend) -> None:
        self.be = be
        self.runs = [be.put(y) for y in y_runs] if be.name == "torch" else y_runs

    def rows(self, runs: list[int], cols: slice) -> Any:
        """The voxels ``cols`` of ``runs``, their volumes one after the other, on the backend."""
        if self.be.name == "torch":
            return self.be.cat([self.runs[i][:, cols] for i in runs])
        return self.be.put(np.concatenate([self.runs[i][:, cols] for i in runs]))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------ one split's algebra
def _standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    std = train.std(0)
    std[std < 1e-8] = 1.0
    return mean, std


@dataclass
class _Train:
    """Eigendecomposition of one training set's Gram matrix (float64), shared by every split
    that trains on the same runs (in nested CV, the inner splits (test a, validation b) and
    (test b, validation a) both train on the other runs).

    With standardised training features X (n_train, p), X X' = U diag(lam) U'; confounds C of
    the training rows, when given, are standardised and decomposed once too (``svd``).
    """

    mean: np.ndarray
    std: np.ndarray
    xt: np.ndarray  # (n_train, p) standardised training features, in the product dtype
    u: np.ndarray  # (n_train, k)
    lam: np.ndarray  # (k,)
    confounds: tuple[np.ndarray, ...] | None = None  # (mean, std, q, s, vt) of C_train

    @classmethod
    def fit(cls, x_train: np.ndarray, c_train: np.ndarray | None = None,
            dtype: Any = np.float64) -> _Train:
        """Standardise and decompose; the Gram matrix is formed in ``dtype``, the
        eigendecomposition is float64."""
        mean, std = _standardizer(np.asarray(x_train, np.float64))
        xt = ((x_train - mean) / std).astype(dtype)
        gram = (xt @ xt.T).astype(np.float64)
        if len(gram) < LARGE_GRAM:
            # small and latency-bound: one LAPACK thread is faster than two, and far faster
            # when other processes share the cores
            with _one_thread():
                lam, u = eigh(gram, driver="evr", check_finite=False)
        else:  # every thread, divide and conquer: 2400 volumes 3.2 s -> 1.5 s on 2 cores
            lam, u = eigh(gram, driver="evd", check_finite=False)
        keep = lam > max(lam[-1], 0.0) * 1e-10
        train = cls(mean, std, xt, u[:, keep], lam[keep])
        if c_train is not None and c_train.shape[1] > 0:
            cm, cs = _standardizer(np.asarray(c_train, np.float64))
            q, s, vt = np.linalg.svd((c_train - cm) / cs, full_matrices=False)
            ok = s > s[0] * 1e-8
            train.confounds = (cm, cs, q[:, ok], s[ok], vt[ok])
        return train

    def split(self, x_test: np.ndarray, c_test: np.ndarray | None = None) -> _Split:
        """The split of these training runs and held-out features ``x_test`` (and confounds
        ``c_test`` when the training set has confounds)."""
        dtype = self.xt.dtype
        xv = ((x_test - self.mean) / self.std).astype(dtype)
        split = _Split(self.u, self.lam,
                       ((xv @ self.xt.T) @ self.u.astype(dtype)).astype(np.float64))
        if self.confounds is not None:
            cm, cs, q, s, vt = self.confounds
            cv = (np.asarray(c_test, np.float64) - cm) / cs
            split.confound_proj = q
            # betas = pinv(C_train) Y = vt' diag(1/s) q' Y; held-out: Y_test - C_test betas
            split.confound_test = -((cv @ vt.T) / s) @ q.T
        return split


@dataclass
class _Split:
    """One split's ridge problem, from the eigendecomposition of its training Gram matrix
    (:class:`_Train`).

    With standardised training features X (n_train, p), held-out features Xv (n_test, p) and
    X X' = U diag(lam) U', ridge predictions are Xv X' (X X' + a I)^-1 Y =
    (kvu / (lam + a)) @ U' @ Y: any number of penalties from one decomposition, whatever p.
    With confounds C, fitted on the training rows only: the training BOLD is projected off
    span(C_train) (``confound_proj``, folded into the hat matrices) and the held-out BOLD
    becomes ``Y_test + confound_test @ Y_train`` = Y_test - C_test pinv(C_train) Y_train.
    """

    u: np.ndarray  # (n_train, k)
    lam: np.ndarray  # (k,)
    kvu: np.ndarray  # (n_test, k)
    confound_proj: np.ndarray | None = None  # (n_train, c) orthonormal basis of train confounds
    confound_test: np.ndarray | None = None  # (n_test, n_train): -C_test pinv(C_train)

    @classmethod
    def fit(cls, x_train: np.ndarray, x_test: np.ndarray, c_train: np.ndarray | None = None,
            c_test: np.ndarray | None = None, dtype: Any = np.float64) -> _Split:
        """Decompose the training set and split off the held-out features (see
        :class:`_Train`)."""
        return _Train.fit(x_train, c_train, dtype).split(x_test, c_test)

    def hats(self, alphas: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """(n_alphas, n_test, n_train) matrices mapping training BOLD to held-out predictions
        (confound regression of the training BOLD included); one matrix product in ``dtype``."""
        alphas = np.atleast_1d(np.asarray(alphas, np.float64))
        scaled = (self.kvu[None] / (self.lam + alphas[:, None, None])).astype(dtype)
        h = scaled.reshape(-1, self.u.shape[1]) @ self.u.T.astype(dtype)
        if self.confound_proj is not None:
            q = self.confound_proj.astype(dtype)
            h -= (h @ q) @ q.T
        return h.reshape(len(alphas), -1, self.u.shape[0])

    def hat(self, alpha: float, dtype: Any = np.float64) -> np.ndarray:
        """(n_test, n_train) hat matrix of one penalty."""
        return self.hats(np.array([alpha]), dtype)[0]

    def predict(self, y_train: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """Held-out predictions for each penalty, shape (n_alphas, n_test, n_voxels)."""
        return self.hats(alphas) @ y_train

    def stacked(self, alphas: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """Hat matrices of all penalties stacked row-wise, followed (with confounds) by the
        held-out cleaning rows: ((n_alphas [+ 1]) * n_test, n_train)."""
        h = self.hats(alphas, dtype).reshape(-1, self.u.shape[0])
        if self.confound_test is not None:
            h = np.concatenate([h, self.confound_test.astype(dtype)])
        return h


def _train(x_runs: list[np.ndarray], train: list[int], confounds: list[np.ndarray] | None,
           dtype: Any = np.float64) -> _Train:
    x_train = np.concatenate([x_runs[i] for i in train])
    if confounds is None:
        return _Train.fit(x_train, dtype=dtype)
    return _Train.fit(x_train, np.concatenate([confounds[i] for i in train]), dtype)


def _split(x_runs: list[np.ndarray], test: int, train: list[int],
           confounds: list[np.ndarray] | None, dtype: Any = np.float64) -> _Split:
    return _train(x_runs, train, confounds, dtype).split(
        x_runs[test], None if confounds is None else confounds[test])


def resolve_inner_stride(inner_stride: int | str, lengths: list[int]) -> int:
    """The inner CV's validation stride for folds of ``lengths`` volumes (``auto``: 2 when
    every fold has at least ``LONG_RUN`` volumes, else 1)."""
    if inner_stride == "auto":
        return 2 if min(lengths) >= LONG_RUN else 1
    if not isinstance(inner_stride, int | np.integer) or inner_stride < 1:
        raise ValueError(f"inner_stride must be 'auto' or an integer of at least 1, got "
                         f"{inner_stride!r}.")
    return int(inner_stride)


def cross_validate(x_runs: list[np.ndarray], y_runs: list[np.ndarray], alphas: np.ndarray,
                   confounds: list[np.ndarray] | None = None,
                   batch_voxels: int = BATCH_VOXELS,
                   backend: str | Backend = "auto",
                   progress: Callable[[str], None] | None = None,
                   inner_stride: int | str = 1,
                   alpha_search: str = "grid",
                   _outer: list[_Split] | None = None,
                   _bold: _Bold | None = None) -> CVScores:
    """Nested leave-one-run-out ridge: per-voxel penalty by inner CV, refit, held-out scores.

    Parameters
    ----------
    x_runs : per run, features of shape (n_volumes_run, n_features)
    y_runs : per run, BOLD of shape (n_volumes_run, n_voxels), cleaned within the run
    alphas : (n_alphas,) penalties to choose from, per voxel
    confounds : optional, per run, confounds of shape (n_volumes_run, n_confounds), regressed
        out of the BOLD inside every split (betas from the training runs only)
    batch_voxels : voxels per matrix product (bounds memory: about
        4 * (n_alphas + 1) * n_test_volumes * batch_voxels bytes of predictions)
    backend : ``auto`` (CUDA torch when available, else numpy), ``numpy``, ``torch``,
        ``torch-cpu``, ``torch-cuda`` or a Backend
    progress : called with a short message after each outer fold
    inner_stride : the inner CV scores each penalty on every ``inner_stride``-th validation
        volume (1: all). BOLD and its predictions are smooth over several volumes, so on long
        runs a stride of 2 picks nearly the same penalties (tests/test_encoding.py) at half the
        inner CV's cost; ``auto``: 2 when every run (fold) has at least ``LONG_RUN`` volumes,
        else 1 (short runs have little to spare, and cost little). The outer fits and scores
        always use every volume.
    alpha_search : ``grid`` scores every penalty for every voxel; ``refine`` (grids of at
        least 5 penalties) scores every 2nd penalty, then, per voxel, the two next to its best
        one, and for every voxel the two next to the best common penalty: the same choice as
        ``grid`` wherever the inner-CV score is unimodal along the grid (every voxel and fold
        in tests/test_encoding.py; 99.78 % of the demo's, and every common penalty), scoring
        ~8 of 10 or ~12 of 17 penalties per voxel.
    """
    if alpha_search not in ("grid", "refine"):
        raise ValueError(f"unknown alpha_search {alpha_search!r}; use grid or refine.")
    lengths = [y.shape[0] for y in y_runs]
    inner_stride = resolve_inner_stride(inner_stride, lengths)
    be = backend if isinstance(backend, Backend) else Backend(backend)
    alphas = np.asarray(alphas, np.float64)
    n_runs, n_vox = len(x_runs), y_runs[0].shape[1]
    alpha_folds = np.zeros((n_runs, n_vox), np.float32)
    r_folds = np.zeros((n_runs, n_vox), np.float32)
    r2_folds = np.zeros((n_runs, n_vox), np.float32)
    inner_r2 = np.zeros((n_runs, n_vox), np.float32)
    alpha_common = np.zeros(n_runs, np.float32)
    r_common = np.zeros((n_runs, n_vox), np.float32)
    workers = _chunk_workers(be)
    # several workers share the batch (the memory bound) between them
    step = -(-batch_voxels // workers)
    batches = [slice(s, min(n_vox, s + step)) for s in range(0, n_vox, step)]

    bold = _bold if _bold is not None else _Bold(y_runs, be)
    rows = slice(None, None, inner_stride)  # validation volumes; a hat's rows are their own
    scores, scored = _inner_scores(x_runs, confounds, alphas, bold, batches, be, rows,
                                   alpha_search, workers)
    if progress is not None:
        progress(f"inner CV: {scored.sum() / scored[:, 0].size:.1f} of {len(alphas)} "
                 f"penalties scored per voxel and fold ({alpha_search})")
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        score = np.where(scored[test], scores[test], -np.inf)
        best = np.argmax(score, axis=0)
        alpha_folds[test] = alphas[best]
        inner_r2[test] = score.max(0) / len(train)
        everywhere = np.flatnonzero(scored[test].all(1))  # penalties scored for every voxel
        common = int(everywhere[np.argmax(score[everywhere].sum(1))])
        alpha_common[test] = alphas[common]
        split = (_outer[test] if _outer is not None
                 else _split(x_runs, test, train, confounds, be.dtype))
        used = np.unique(best)
        hats = split.hats(alphas[used], be.dtype)
        hat_common = be.put(split.hat(alphas[common], be.dtype))
        clean = be.put(split.confound_test) if split.confound_test is not None else None
        hats_be = [be.put(h) for h in hats]
        _for_chunks(functools.partial(_outer_batch, bold=bold, train=train, test=test,
                                      clean=clean, hats=hats_be, used=used, best=best,
                                      hat_common=hat_common,
                                      out=(r_folds[test], r2_folds[test], r_common[test])),
                    batches, workers)
        if progress is not None:
            progress(f"outer fold {test + 1}/{n_runs} done ({n_vox} voxels, "
                     f"{len(batches)} batches, backend {be})")
    return CVScores(alpha_folds, r_folds, r2_folds, inner_r2, alpha_common, r_common)


def _inner_scores(x_runs: list[np.ndarray], confounds: list[np.ndarray] | None,
                  alphas: np.ndarray, bold: _Bold, batches: list[slice], be: Backend,
                  rows: slice, alpha_search: str, workers: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The inner CV: validation R² of the penalties, summed over each outer fold's inner folds,
    (n_runs, n_alphas, n_voxels), and which were scored (all, under ``grid``).

    The inner splits (outer test a, validation b) and (test b, validation a) train on the
    same runs: one decomposition serves both (pairs in order, so every fold's sum adds its
    validation runs in increasing order). Under ``refine`` the first pass scores every 2nd
    penalty and keeps the other penalties' hats; the second scores, per fold, the neighbours of
    each voxel's best penalty (those voxels only) and of the best common one (every voxel).
    """
    n_runs, n_vox, n_alphas = len(x_runs), bold.runs[0].shape[1], len(alphas)
    n_train = sum(len(x) for x in x_runs) * (n_runs - 2) // n_runs
    n_val = max(len(range(len(x))[rows]) for x in x_runs)
    fine = np.arange(1, n_alphas, 2)
    refine = (alpha_search == "refine" and n_alphas >= 5
              and n_runs * (n_runs - 1) * (len(fine) + 1) * n_val * n_train * 4 <= REFINE_BYTES)
    first = np.arange(0, n_alphas, 2) if refine else np.arange(n_alphas)
    scores = np.zeros((n_runs, n_alphas, n_vox), np.float64)
    scored = np.zeros((n_runs, n_alphas, n_vox), bool)
    scored[:, first] = True
    kept = []  # under refine: (test, val, training runs, hats of the other penalties, cleaning)
    for a, b in itertools.combinations(range(n_runs), 2):
        inner_train = [i for i in range(n_runs) if i not in (a, b)]
        dec = _train(x_runs, inner_train, confounds, be.dtype)
        for test, val in ((a, b), (b, a)):
            split = dec.split(x_runs[val][rows],
                              None if confounds is None else confounds[val][rows])
            stacked = be.put(split.stacked(alphas[first], be.dtype))
            if refine:
                kept.append((test, val, inner_train, split.hats(alphas[fine], be.dtype),
                             split.confound_test))
            # in order, every BLAS thread on each batch's large product (side by side on
            # one thread each was no faster here, measured)
            _for_chunks(functools.partial(_score_first, stacked=stacked, bold=bold,
                                          train=inner_train, val=val, rows=rows,
                                          n=len(first), clean=split.confound_test is not None,
                                          out=scores[test], first=first), batches, 1)
        del dec
    if not refine:
        return scores, scored
    need = np.zeros((n_runs, n_alphas, n_vox), bool)
    voxels = np.arange(n_vox)
    for test in range(n_runs):
        part = scores[test][first]
        own = first[np.argmax(part, axis=0)]
        common = first[np.argmax(part.sum(1))]
        for step in (-1, 1):
            j = own + step
            ok = (j >= 0) & (j < n_alphas)
            need[test][j[ok], voxels[ok]] = True
            if 0 <= common + step < n_alphas:
                need[test][common + step] = True
    need[:, first] = False
    for test, val, inner_train, hats, clean in kept:
        _for_chunks(functools.partial(_score_second, hats=[be.put(h) for h in hats],
                                      clean=None if clean is None else be.put(clean),
                                      bold=bold, train=inner_train, val=val, rows=rows,
                                      todo=need[test][fine], out=scores[test], fine=fine),
                    batches, workers)
    scored |= need
    return scores, scored


def _outer_batch(cols: slice, *, bold: _Bold, train: list[int], test: int, clean: Any,
                 hats: list[Any], used: np.ndarray, best: np.ndarray, hat_common: Any,
                 out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """One batch of an outer fold: predictions with each voxel's penalty (``hats[j]`` for
    penalty ``used[j]``) and with the common one; r, R² and r with the common penalty into
    ``out``."""
    be = bold.be
    y_tr = bold.rows(train, cols)
    y_te = bold.rows([test], cols)
    if clean is not None:
        y_te = y_te + clean @ y_tr
    pred = y_te * 0
    best_b = best[cols]
    for j, a in enumerate(used):
        sel = np.flatnonzero(best_b == a)
        if sel.size:
            idx = be.index(sel)
            pred[:, idx] = hats[j] @ y_tr[:, idx]
    out[0][cols] = be.get(pearson_r(y_te, pred))
    out[1][cols] = be.get(r2_score(y_te, pred))
    out[2][cols] = be.get(pearson_r(y_te, hat_common @ y_tr))


def _score_first(cols: slice, *, stacked: Any, bold: _Bold, train: list[int], val: int,
                 rows: slice, n: int, clean: bool, out: np.ndarray, first: np.ndarray) -> None:
    """One batch of an inner split's first pass: validation R² of the ``n`` penalties
    ``first`` (hats stacked, then the cleaning rows when ``clean``) added to ``out``."""
    be = bold.be
    prod = stacked @ bold.rows(train, cols)
    y_val = bold.rows([val], cols)[rows]
    m = y_val.shape[0]
    if clean:
        y_val = y_val + prod[n * m:]
    # R² in place on the product (no temporaries of its size)
    resid = prod[: n * m].reshape(n, m, -1)
    resid -= y_val
    out[first, cols] += be.get(1.0 - column_dot(resid, resid) / total_ss(y_val)
                               ).astype(np.float64)


def _score_second(cols: slice, *, hats: list[Any], clean: Any, bold: _Bold, train: list[int],
                  val: int, rows: slice, todo: np.ndarray, out: np.ndarray,
                  fine: np.ndarray) -> None:
    """One batch of an inner split's second pass (``refine``): validation R² of penalty
    ``fine[i]`` (hat ``hats[i]``) added to ``out`` for the voxels ``todo[i]`` marks."""
    be = bold.be
    todo = todo[:, cols]
    if not todo.any():
        return
    y_tr = bold.rows(train, cols)
    y_val = bold.rows([val], cols)[rows]
    if clean is not None:
        y_val = y_val + clean @ y_tr
    # the batch's total sum of squares, as the first pass divides by (same rounding)
    ss = total_ss(y_val)
    for h, j, mask in zip(hats, fine, todo, strict=True):
        sel = np.flatnonzero(mask)
        if sel.size == 0:
            continue
        idx = slice(None) if sel.size == mask.size else be.index(sel)
        resid = h @ y_tr[:, idx] - y_val[:, idx]
        out[j, cols][sel] += be.get(1.0 - column_dot(resid, resid) / ss[idx]).astype(np.float64)


def _null_draws(outer: list[_Split], hats: list[np.ndarray], bold: _Bold,
                design: ShiftDesign, batch_voxels: int,
                progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Null draws of ``r_common`` (n_permutations, n_voxels): the whole outer loop refitted on
    BOLD circularly shifted within each run, run ``g`` by ``design.shifts[j, g]`` in draw ``j``.

    Held-out run f's refit prediction is a sum over its training runs g of
    ``hat[:, g] @ roll(y_g, k_g)`` (the hat's rows centred over time, so predictions are
    centred), compared with ``roll(z_f, k_f)`` (z-scored held-out BOLD). With ``k``
    candidate shifts per run (``stats.ShiftDesign``), the ``k`` products of each training run
    (``pieces``, one matrix product of the rolled hat blocks stacked) serve every draw; each
    draw's r is then assembled from the pieces' inner products with the shifted held-out BOLD
    (numerator) and with each other (the prediction's squared norm: own norms plus cross
    terms between runs), small batched products per voxel. The result equals refitting each
    draw separately (tests/test_encoding.py) at about ``k / n_permutations`` of its cost.
    """
    n_runs = len(bold.runs)
    n_vox = bold.runs[0].shape[1]
    lengths = [y.shape[0] for y in bold.runs]
    n_perm, k = design.index.shape[0], design.k
    r_null = np.zeros((n_perm, n_vox), np.float32)
    workers = _chunk_workers(bold.be)
    for test in range(n_runs):
        _null_fold(test, outer[test], hats[test], bold, lengths, design, r_null, batch_voxels,
                   workers)
        if progress is not None:
            progress(f"null: outer fold {test + 1}/{n_runs} done ({n_perm} draws from "
                     f"{k} shifts per run)")
    return r_null


def _null_fold(test: int, split: _Split, hat: np.ndarray, bold: _Bold, lengths: list[int],
               design: ShiftDesign, r_null: np.ndarray, batch_voxels: int,
               workers: int) -> None:
    """Adds held-out run ``test``'s share of every null draw to ``r_null`` (see
    :func:`_null_draws`), voxel chunk by chunk."""
    be, n_runs, k = bold.be, len(lengths), design.k
    train = [i for i in range(n_runs) if i != test]
    hat = hat - hat.mean(0, keepdims=True)  # centred predictions
    n_test = hat.shape[0]
    bounds = np.cumsum([0, *[lengths[i] for i in train]])
    # per training run: its k rolled hat blocks side by side, (n_run, k * n_test)
    blocks = [be.put(np.concatenate([np.roll(hat[:, a:b], -int(s), axis=1)
                                     for s in design.sets[g]]).T)
              for g, a, b in zip(train, bounds[:-1], bounds[1:], strict=True)]
    # (n_perm, n_train_runs): each draw's rows among the pieces
    pick = np.stack([i * k + design.index[:, g] for i, g in enumerate(train)], axis=1)
    rows, rows_t = be.index(pick[:, :, None]), be.index(pick[:, None, :])
    rows_n, cols_n = be.index(pick), be.index(design.index[:, test][:, None])
    clean = None if split.confound_test is None else be.put(split.confound_test)
    # the held-out run's k shifts: roll(z, s)[t] = z[(t - s) mod n_test]
    shifted = be.index((np.arange(n_test) - np.asarray(design.sets[test])[:, None]) % n_test)

    def chunk(cols: slice) -> None:
        y_train = [bold.rows([g], cols) for g in train]
        y_test = bold.rows([test], cols)
        if clean is not None:
            y_test = y_test + clean @ be.cat(y_train)
        z = zscore_time(y_test).T[:, shifted]  # (v, k, n_test)
        # the pieces of every training run, (v, k * n_train_runs, n_test)
        pieces = be.cat([(y.T @ blk).reshape(-1, k, n_test)
                         for y, blk in zip(y_train, blocks, strict=True)], axis=1)
        num = (pieces @ z.swapaxes(-1, -2))[:, rows_n, cols_n].sum(-1)
        gram = pieces @ pieces.swapaxes(-1, -2)
        sq = gram[:, rows, rows_t].sum((-1, -2))
        norm = (sq.clip(min=0) * n_test) ** 0.5
        r = num / norm.clip(min=1e-12 * n_test)
        r_null[:, cols] += be.get(r).T / n_runs

    # voxels per chunk: the pieces take about 32 MB (faster than larger chunks: cache)
    n_vox = r_null.shape[1]
    step = max(1, min(batch_voxels, int(2**25 // (4 * k * n_test * len(train)))))
    _for_chunks(chunk, [slice(s, min(n_vox, s + step)) for s in range(0, n_vox, step)], workers)


def split_blocks(x_runs: list[np.ndarray], y_runs: list[np.ndarray],
                 c_runs: list[np.ndarray], bounds: list[np.ndarray]
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The cross-validation folds of a subject: each run's blocks as separate series (one
    block a run under leave-one-run-out).

    Parameters
    ----------
    x_runs : per run, (>= last block's stop, n_features), feature rows from the run's first
        analysed volume on
    y_runs, c_runs : per run, (n_kept, n_targets) / (n_kept, n_confounds), the run's cleaned
        blocks one after the other (``bold.clean_run_in_blocks``)
    bounds : per run, (n_blocks, 2) [start, stop) of each block in the analysed volumes

    Returns
    -------
    xs, ys, cs : per block, the features, BOLD and confounds
    """
    xs, ys, cs = [], [], []
    for i, (x, y, c, b) in enumerate(zip(x_runs, y_runs, c_runs, bounds, strict=True)):
        b = np.asarray(b, dtype=int).reshape(-1, 2)
        lengths = b[:, 1] - b[:, 0]
        if lengths.sum() != len(y) or len(c) != len(y):
            raise ValueError(f"run {i}: {len(y)} BOLD rows and {len(c)} confound rows, but its "
                             f"blocks hold {lengths.sum()} volumes; rerun prepare_bold.")
        if b[-1, 1] > len(x):
            raise ValueError(f"run {i}: blocks reach volume {b[-1, 1]} but the features have "
                             f"{len(x)} rows.")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for (start, stop), a, z in zip(b, offsets[:-1], offsets[1:], strict=True):
            xs.append(x[start:stop])
            ys.append(y[a:z])
            cs.append(c[a:z])
    return xs, ys, cs


@dataclass(frozen=True)
class FitOptions:
    """Settings of :func:`fit_layer`; the defaults are the config schema's (``encoding``).

    Attributes
    ----------
    n_permutations : refits on circularly shifted BOLD for the null (at least 3), drawn from
        a shared shift design (``stats.shift_design``)
    min_shift : smallest circular shift (volumes) used for the null (0: all shifts; see
        ``stats.circular_shifts``)
    batch_voxels : voxels fitted at once (bounds memory)
    seed : seed of the circular shifts (every layer of a subject uses the same ones)
    backend : see :func:`cross_validate`
    inner_stride : validation volumes the inner CV scores penalties on (every
        ``inner_stride``-th, or ``auto``; see :func:`cross_validate`)
    null_design : ``shared`` (draws combine each run's ~sqrt(2 n_permutations) shifts; the
        default) or ``independent`` (every draw its own shifts, n_permutations refits)
    alpha_search : ``refine`` (every 2nd penalty, then the neighbours of the best ones; the
        default) or ``grid`` (every penalty; see :func:`cross_validate`)
    """

    n_permutations: int = 50
    min_shift: int = 0
    batch_voxels: int = BATCH_VOXELS
    seed: int = 0
    backend: str | Backend = "auto"
    inner_stride: int | str = "auto"
    null_design: str = "shared"
    alpha_search: str = "refine"

    @classmethod
    def from_config(cls, encoding: dict[str, Any], t_r: float) -> FitOptions:
        """The options of a config's ``encoding`` section (``min_shift_s`` in seconds, turned
        into volumes of ``t_r`` seconds)."""
        return cls(n_permutations=encoding["n_permutations"],
                   min_shift=seconds_to_volumes(encoding["min_shift_s"], t_r),
                   batch_voxels=encoding["batch_voxels"], backend=encoding["backend"],
                   inner_stride=encoding["inner_stride"], null_design=encoding["null_design"],
                   alpha_search=encoding["alpha_search"])


def fit_layer(x_runs: list[np.ndarray], y_runs: list[np.ndarray], alphas: np.ndarray,
              options: FitOptions | None = None, *,
              confounds: list[np.ndarray] | None = None,
              progress: Callable[[str], None] | None = None) -> LayerScores:
    """Leave-one-run-out ridge encoding of every voxel from one layer's features, with the
    circular-shift null.

    Parameters
    ----------
    x_runs : per run, array of shape (n_volumes_run, n_features)
    y_runs : per run, array of shape (n_volumes_run, n_voxels), cleaned within the run (runs
        of equal length may come as one array of shape (n_runs, n_volumes, n_voxels))
    alphas : array of shape (n_alphas,), penalties to choose from (per voxel)
    options : permutations, null shifts, batch size, seed and backend (:class:`FitOptions`;
        default: the schema's defaults)
    confounds : optional, per run, (n_volumes_run, n_confounds) regressed out of the BOLD
        inside every split (fitted on the training runs only)
    progress : called with short progress messages
    """
    opts = options or FitOptions()
    n_permutations, batch_voxels = opts.n_permutations, opts.batch_voxels
    n_runs = len(x_runs)
    if n_runs < 3:
        raise ValueError(f"need at least 3 runs for nested leave-one-run-out CV, got {n_runs}.")
    if n_permutations < 3:
        raise ValueError(f"n_permutations must be at least 3, got {n_permutations}.")
    if opts.null_design not in ("shared", "independent"):
        raise ValueError(f"unknown null_design {opts.null_design!r}; use shared or independent.")
    if len(y_runs) != n_runs:
        raise ValueError("x_runs and y_runs must have one entry per run.")
    for i, (x, y) in enumerate(zip(x_runs, y_runs, strict=True)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"run {i}: {x.shape[0]} feature rows but {y.shape[0]} volumes.")
    if confounds is not None:
        if len(confounds) != n_runs:
            raise ValueError("confounds must have one entry per run.")
        for i, (c, y) in enumerate(zip(confounds, y_runs, strict=True)):
            if c.shape[0] != y.shape[0]:
                raise ValueError(f"run {i}: {c.shape[0]} confound rows but {y.shape[0]} "
                                 "volumes.")
    alphas = np.asarray(alphas, dtype=np.float32)
    lengths = [y.shape[0] for y in y_runs]
    be = opts.backend if isinstance(opts.backend, Backend) else Backend(opts.backend)
    outer = [_split(x_runs, test, [i for i in range(n_runs) if i != test], confounds, be.dtype)
             for test in range(n_runs)]
    bold = _Bold(y_runs, be)  # the BOLD on the backend once, for the CV and the null
    cv = cross_validate(x_runs, y_runs, alphas, confounds, batch_voxels, be, progress,
                        opts.inner_stride, opts.alpha_search, _outer=outer, _bold=bold)

    design = shift_design(lengths, n_permutations, opts.min_shift, opts.seed,
                          shared=opts.null_design == "shared")
    hats = [outer[test].hat(float(cv.alpha_common[test]), np.float32) for test in range(n_runs)]
    r_null = _null_draws(outer, hats, bold, design, batch_voxels, progress)
    r = cv.r_folds.mean(0)
    r_common = cv.r_common_folds.mean(0)
    null_mean = r_null.mean(0)
    null_std = np.maximum(r_null.std(0, ddof=1), 1e-6)
    p = null_p(r_common, r_null)
    return LayerScores(r=r, r_folds=cv.r_folds, r2=cv.r2_folds.mean(0), alpha=cv.alpha,
                       null_mean=null_mean.astype(np.float32),
                       null_std=null_std.astype(np.float32), p=p, inner_r2=cv.inner_r2,
                       r_null=r_null, r_common=r_common, alpha_common=cv.alpha_common)


def closed_form_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Reference ridge weights (X'X + alpha I)^-1 X'y, for tests."""
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)
