"""Statistics shared by the stages: multiple comparisons across layers and voxels, the best
layer chosen without double dipping and whether it can be claimed at all (significance, layers
that cannot be told apart), the inter-subject-correlation noise ceiling, and group tests across
subjects (t, sign-flip and fixed-effects permutation tests, bootstrap of the best layer)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def bh_adjusted(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same shape as ``p``; NaN stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat)  # NaN last
    adj = np.fmin.accumulate((flat[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out.reshape(p.shape)


def fdr_bh(p: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg: boolean array, True where the hypothesis is rejected at FDR ``q``."""
    return bh_adjusted(p) <= q


def min_p_over_layers(p_layers: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted smallest p over layers, (n_layers, n_voxels) -> (n_voxels,)."""
    n_layers = p_layers.shape[0]
    return np.minimum(p_layers.min(axis=0) * n_layers, 1.0)


def simes_over_layers(p_layers: np.ndarray) -> np.ndarray:
    """Simes combination over layers, (n_layers, n_voxels) -> (n_voxels,).

    Tests "some layer predicts this voxel"; valid when the layers' tests are positively
    dependent (they share the voxel's BOLD and similar features), and far less conservative
    than Bonferroni when neighbouring layers carry the same information."""
    n_layers = p_layers.shape[0]
    ranked = np.sort(p_layers, axis=0)
    return np.minimum((ranked * n_layers / np.arange(1, n_layers + 1)[:, None]).min(0), 1.0)


def significant_voxels(p_layers: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Voxels predicted above chance by at least one layer: Simes over layers, then
    Benjamini-Hochberg FDR ``q`` over voxels."""
    return fdr_bh(simes_over_layers(p_layers), q)


def mean_ci(values: np.ndarray, axis: int = 0, level: float = 0.95
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t-based confidence interval across ``axis`` (e.g. subjects); the interval is
    NaN with fewer than 2 values (a zero-width interval would look certain)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    sem = values.std(axis, ddof=1) / np.sqrt(n)
    half = t.ppf(0.5 + level / 2, n - 1) * sem
    return mean, mean - half, mean + half


# ------------------------------------------------ best layer without double dipping
@dataclass
class BestLayer:
    """Best layer of each unit (voxel or ROI), chosen on data independent of its reported score.

    Attributes
    ----------
    layer_folds : (n_folds, n_units) layer chosen in each outer fold from that fold's
        training-run scores alone.
    layer : (n_units,) the layer chosen most often over folds (ties: the higher mean selection
        score).
    stability : (n_units,) share of folds that chose ``layer``.
    mean_layer : (n_units,) mean of the chosen layer numbers over folds.
    independent_r : (n_units,) held-out r of each fold's chosen layer on that fold's held-out
        run, averaged over folds: selection and score never see the same run.
    naive_layer, naive_r : (n_units,) argmax and max over layers of the fold-averaged held-out
        r; the selection and the score use the same data, so ``naive_r`` is biased upward.
    """

    layer_folds: np.ndarray
    layer: np.ndarray
    stability: np.ndarray
    mean_layer: np.ndarray
    independent_r: np.ndarray
    naive_layer: np.ndarray
    naive_r: np.ndarray


def crossfit_best_layer(selection: np.ndarray, heldout: np.ndarray,
                        layers: Sequence[int] | None = None) -> BestLayer:
    """Cross-fitted best layer: per outer fold, pick the layer from scores computed on that
    fold's training runs only, and score the pick on the fold's held-out run.

    Parameters
    ----------
    selection : array of shape (n_layers, n_folds, n_units); ``selection[l, f]`` must not
        depend on fold ``f``'s held-out run (e.g. the inner-CV validation R² of fold ``f``).
        The held-out scores of the *other* folds do not qualify with leave-one-run-out CV:
        their models were trained on run ``f``, and on pure noise they correlate with fold
        ``f``'s score (0.3 measured), which biases the picked layer's score upward.
    heldout : array of shape (n_layers, n_folds, n_units), held-out r of each fold.
    layers : layer numbers of the rows (default 0..n_layers-1).
    """
    selection = np.asarray(selection, dtype=np.float64)
    heldout = np.asarray(heldout, dtype=np.float64)
    if selection.shape != heldout.shape or selection.ndim != 3:
        raise ValueError(f"selection {selection.shape} and heldout {heldout.shape} must both "
                         "be (n_layers, n_folds, n_units).")
    n_layers, n_folds, n_units = heldout.shape
    numbers = np.arange(n_layers) if layers is None else np.asarray([int(v) for v in layers])
    pick = np.nan_to_num(selection, nan=-np.inf).argmax(0)  # (n_folds, n_units)
    independent = np.take_along_axis(heldout, pick[None], 0)[0].mean(0)
    counts = np.stack([(pick == li).sum(0) for li in range(n_layers)])  # (n_layers, n_units)
    # ties between equally frequent layers go to the better mean selection score
    rank = np.nan_to_num(selection.mean(1), nan=-np.inf).argsort(0).argsort(0)
    mode = (counts * (n_layers + 1) + rank).argmax(0)
    mean_r = heldout.mean(1)
    naive = mean_r.argmax(0)
    return BestLayer(layer_folds=numbers[pick], layer=numbers[mode],
                     stability=counts[mode, np.arange(n_units)] / n_folds,
                     mean_layer=numbers[pick].mean(0), independent_r=independent,
                     naive_layer=numbers[naive], naive_r=mean_r.max(0))


# ------------------------------------------------ layers that cannot be told apart
#: Consecutive-layer linear CKA at or above which two layers count as indistinguishable.
#: Measured with ``similarity.layer_similarity`` on 152 s of the demo's TTS speech (4 stories,
#: 10 s windows + 5 s context, float32), at TR 1 / 1.5 / 2 s: real Whisper tiny.en at most
#: 0.959 / 0.979 / 0.983; the demo's random wav2vec2-base (``initializer_range`` 0.2) at most
#: 0.971 / 0.972 / 0.971 (it recovers planted layers 3 apart); a random wav2vec2-base at
#: transformers' default init 0.878-0.941 between the CNN output and layer 1, then at least
#: 0.9985 / 0.9975 / 0.9982; a random Whisper tiny at default init at least 0.9983 everywhere.
#: 0.99 sits between (1 - CKA: 0.017 for the most similar real layers, 0.0025 for the random
#: ones); erring towards calling layers alike withholds a claim rather than making one.
CKA_INDISTINGUISHABLE = 0.99


def layer_groups(layers: Sequence[int], consecutive_cka: dict[int, float],
                 threshold: float = CKA_INDISTINGUISHABLE) -> list[list[int]]:
    """Split the fitted layers into runs of layers that cannot be told apart.

    Two fitted layers ``a < b`` are joined when every consecutive CKA from ``a`` to ``b``
    (``consecutive_cka[k]`` = CKA between layers k and k+1) is at least ``threshold``; a
    missing or NaN CKA keeps them apart.

    Returns
    -------
    groups : lists of layer numbers in increasing order, covering ``layers``.
    """
    numbers = sorted(int(v) for v in layers)
    if not numbers:
        return []
    groups = [[numbers[0]]]
    for a, b in zip(numbers[:-1], numbers[1:], strict=True):
        values = [consecutive_cka.get(k, np.nan) for k in range(a, b)]
        if all(np.isfinite(v) and v >= threshold for v in values):
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def equivalent_layers(layer: int, groups: list[list[int]]) -> list[int]:
    """The fitted layers indistinguishable from ``layer`` (its group from :func:`layer_groups`,
    ``layer`` included)."""
    return next((g for g in groups if int(layer) in g), [int(layer)])


def all_layers_indistinguishable(groups: list[list[int]]) -> bool:
    """True when more than one layer was fitted and all of them fall in one group: no best
    layer can be claimed anywhere (e.g. a random model at its default initialisation)."""
    return len(groups) == 1 and len(groups[0]) > 1


# ------------------------------------------------ noise ceiling
def zscore_time(a: Any) -> Any:
    """Columns of ``a`` (time x units) z-scored over time; constant columns become 0. numpy and
    torch arrays."""
    a = a - a.mean(0)
    if isinstance(a, np.ndarray):
        sd = a.std(0)
        return a / np.where(sd < 1e-12, 1.0, sd)
    sd = (a * a).mean(0) ** 0.5
    return a / (sd + (sd < 1e-12))


def column_dot(a: Any, b: Any) -> Any:
    """Sum over samples of ``a * b``, column by column: a, b (..., n_samples, n_units) ->
    (..., n_units); numpy (one pass, no temporary: 2-3 x faster than the product and its sum
    on a batch of BOLD) and torch arrays."""
    if isinstance(a, np.ndarray):
        return np.einsum("...ij,...ij->...j", a, b)
    return (a * b).sum(-2)


def total_ss(y: Any) -> Any:
    """Sum of squares about the mean of each column of ``y`` (n_samples, n_units), floored at
    1e-12 so that a constant column divides safely; numpy and torch arrays."""
    yc = y - y.mean(0)
    ss = column_dot(yc, yc)
    return ss * (ss > 1e-12) + 1e-12 * (ss <= 1e-12)


def r2_score(y: Any, pred: Any) -> Any:
    """Coefficient of determination of each column: y (n_samples, n_units), pred
    (..., n_samples, n_units) (e.g. one prediction per penalty); numpy and torch arrays."""
    d = pred - y
    return 1.0 - column_dot(d, d) / total_ss(y)


def pearson_r(a: Any, b: Any) -> Any:
    """Pearson r between each column of ``a`` and the same column of ``b`` (n_samples,
    n_units); 0 where either column is constant. numpy and torch arrays."""
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    num = column_dot(ac, bc)
    den = (column_dot(ac, ac) * column_dot(bc, bc)) ** 0.5
    ok = den > 1e-12
    return num * ok / (den + (~ok) * 1.0)


def circular_shifts(lengths: list[int], n_permutations: int, min_shift: int = 0,
                    seed: int = 0) -> np.ndarray:
    """Random circular shifts (n_permutations, n_runs): each run's shift uniform over all its
    shifts (``min_shift`` 0, the default), or over [min_shift, n_run - min_shift].

    Uniform over the whole circle, the shifts form a group, and the observed data are one more
    draw from it: under a stationary null the test is exact. Leaving out the shifts near 0
    makes the observed configuration the only one without near neighbours among the draws,
    and the null's tail thinner than the observed statistic's (p < 0.001 at 1.5-2.6 x nominal
    on smooth noise with min_shift 10, against 0.9-1.0 x without). Seeded, so every layer of a
    subject is tested against the same permutations."""
    ranges = [_shift_range(n, min_shift) for n in lengths]
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(low, high, size=n_permutations) for low, high in ranges],
                    axis=1)


def _shift_range(n: int, min_shift: int) -> tuple[int, int]:
    """[low, high) of the circular shifts of a run of ``n`` volumes: all of them (``min_shift``
    0) or [min_shift, n - min_shift]; a run too short for any is refused."""
    if n - 2 * min_shift < 1:
        raise ValueError(f"run of {n} volumes is too short for circular shifts of at least "
                         f"{min_shift} volumes; lower `encoding.min_shift_s` or use longer "
                         "runs.")
    return (min_shift, n - min_shift + 1) if min_shift else (0, n)


#: irreducible polynomials over GF(2) by degree: the field GF(2^m) for the shift designs
_GF2_POLY = {2: 0b111, 3: 0b1011, 4: 0b10011, 5: 0b100101, 6: 0b1000011, 7: 0b10000011,
             8: 0b100011011, 9: 0b1000010001, 10: 0b10000001001}


def _is_prime(k: int) -> bool:
    return k >= 2 and all(k % d for d in range(2, int(k**0.5) + 1))


def _field_size(n: int) -> int:
    """The smallest prime or power of two (up to 2^10) that is at least ``n``: the sizes of
    finite fields :func:`_field_product` handles."""
    k = max(2, n)
    while not (_is_prime(k) or (k & (k - 1) == 0 and k.bit_length() - 1 in _GF2_POLY)):
        k += 1
    return k


def _field_product(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Product in the finite field of ``k`` elements (integers mod a prime ``k``, or GF(2^m)
    as bit polynomials modulo an irreducible one); elements are 0..k-1."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    if _is_prime(k):
        return (a * b) % k
    m = k.bit_length() - 1
    out, a, b = np.zeros_like(a), a.copy(), b.copy()
    for _ in range(m):
        out ^= np.where(b & 1, a, 0)
        b >>= 1
        a <<= 1
        a = np.where(a & k, a ^ _GF2_POLY[m], a)
    return out


def _field_sum(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    if _is_prime(k):
        return (a + b) % k
    return a ^ b


@dataclass(frozen=True)
class ShiftDesign:
    """Circular shifts of every run for a permutation null whose refits share work.

    Each run ``g`` has ``k`` candidate shifts ``sets[g]``; draw ``j`` shifts run ``g`` by
    ``sets[g, index[j, g]]``. A refit's held-out prediction is a sum over training runs of
    (hat block) @ (shifted run), so each run's ``k`` shifted products serve every draw that
    uses them: the null costs ``k`` refits, not ``n_permutations``.

    ``index`` is an orthogonal array of strength 2 (rows ``(u, w)`` of F², run ``g`` gets
    ``u + g w`` in the finite field F of ``k`` elements, ``k`` a prime or a power of two and
    at least the number of runs): any two draws share the shift of at most one run, so no two
    draws share a fold's whole refit, and each draw is the refit of the whole outer loop on one
    circularly shifted data set, as with independent shifts (``circular_shifts``).

    Attributes
    ----------
    sets : (n_runs, k) candidate shifts of each run, distinct within a run where it is long
        enough, uniform over all shifts (``min_shift`` 0) or over [min_shift, n - min_shift]
    index : (n_permutations, n_runs) which candidate each draw uses
    """

    sets: np.ndarray
    index: np.ndarray

    @property
    def shifts(self) -> np.ndarray:
        """(n_permutations, n_runs) shift of every run in every draw."""
        return np.take_along_axis(self.sets.T, self.index, axis=0)

    @property
    def k(self) -> int:
        return int(self.sets.shape[1])


def shift_design(lengths: list[int], n_permutations: int, min_shift: int = 0,
                 seed: int = 0, shared: bool = True) -> ShiftDesign:
    """Seeded :class:`ShiftDesign` for runs of ``lengths`` volumes: ``k``, the smallest prime
    or power of two with ``k >= n_runs`` and ``k² >= 2 n_permutations`` (11 for 50),
    candidates per run; the draws are ``n_permutations`` rows of the ``k²``-row orthogonal
    array, chosen at random. (With ``k² >= n_permutations`` only, 8 for 50, more draws share a
    run's shift with each other than with the observed data, and p < 0.001 came out at 1.4x
    nominal on the calibration noise of tests/test_encoding.py; 11 and 16: 1.0x, as independent
    shifts.)
    ``shared=False``: independent shifts for every draw and run (``circular_shifts``; ``k`` =
    ``n_permutations``, nothing shared)."""
    if not shared:
        sets = circular_shifts(lengths, n_permutations, min_shift, seed).T.copy()
        return ShiftDesign(sets, np.tile(np.arange(n_permutations)[:, None], (1, len(lengths))))
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}.")
    ranges = [_shift_range(n, min_shift) for n in lengths]
    rng = np.random.default_rng(seed)
    k = _field_size(max(len(lengths), int(np.ceil(np.sqrt(2 * n_permutations)))))
    sets = [low + rng.choice(high - low, size=k, replace=high - low < k) for low, high in ranges]
    u, w = np.divmod(rng.choice(k * k, size=n_permutations, replace=False), k)
    index = _field_sum(u[:, None], _field_product(np.arange(len(lengths))[None], w[:, None], k),
                       k)
    return ShiftDesign(np.stack(sets).astype(np.int64), index.astype(np.int64))



def loso_isc(runs_by_subject: list[list[np.ndarray]]) -> np.ndarray:
    """Leave-one-subject-out inter-subject correlation, run by run.

    Parameters
    ----------
    runs_by_subject : per subject, per run, BOLD of shape (n_volumes_run, n_voxels) on voxels
        shared by all subjects; every subject's run ``i`` heard the same stimulus in sync.

    Returns
    -------
    isc : array of shape (n_subjects, n_runs, n_voxels): Pearson r of each subject's run with
        the mean of the other subjects' same run (NaN with fewer than 2 subjects).
    """
    n_sub = len(runs_by_subject)
    n_runs = len(runs_by_subject[0])
    n_vox = runs_by_subject[0][0].shape[1]
    out = np.full((n_sub, n_runs, n_vox), np.nan, np.float32)
    if n_sub < 2:
        return out
    for run in range(n_runs):
        stack = np.stack([np.asarray(s[run], np.float64) for s in runs_by_subject])
        total = stack.sum(0)
        for s in range(n_sub):
            others = (total - stack[s]) / (n_sub - 1)
            out[s, run] = pearson_r(stack[s], others)
    return out


def ceiling_from_isc(isc: np.ndarray, n_subjects: int) -> np.ndarray:
    """Noise ceiling (the highest r any stimulus model can reach) from a leave-one-subject-out
    ISC, under the shared-signal model.

    Model: each subject's BOLD is a stimulus-driven signal common to all subjects plus
    independent noise of equal variance, so the pairwise ISC is the reliability ``rho`` (signal
    share of variance) and the ceiling is ``sqrt(rho)`` = corr(BOLD, signal). The mean of
    ``k - 1`` other subjects still holds noise: its squared correlation with the signal is the
    Spearman-Brown ``(k-1) rho / (1 + (k-2) rho)``, so the LOSO ISC equals
    ``sqrt(rho) * sqrt(SB_{k-1}(rho))``, i.e. ``isc² = rho² / (rho + (1 - rho) / (k - 1))``.
    This inverts that relation for ``rho`` and returns ``sqrt(rho)`` (0 where isc <= 0, NaN
    where isc is NaN). With k = 2 it is ``sqrt(isc)``; as k grows it tends to ``isc``.
    """
    isc = np.asarray(isc, dtype=np.float64)
    c = 1.0 / (n_subjects - 1)
    r2 = np.clip(isc, 0, 1) ** 2
    rho = (r2 * (1 - c) + np.sqrt(r2**2 * (1 - c) ** 2 + 4 * r2 * c)) / 2
    return np.where(np.isnan(isc), np.nan, np.sqrt(np.clip(rho, 0, 1)))


def isc_null(runs_by_subject: list[list[np.ndarray]], n_permutations: int, min_shift: int,
             seed: int = 0) -> np.ndarray:
    """Null of the subject- and run-averaged LOSO ISC: every subject but the first has each run
    circularly shifted (by at least ``min_shift`` volumes), then the whole LOSO ISC is
    recomputed. Keeps each series' autocorrelation and the dependence between the subjects'
    LOSO terms (they share cross-products); shifting one subject at a time against unshifted
    others breaks that dependence and gave 19% false discoveries at FDR 0.05 on noise.

    Returns
    -------
    null : array of shape (n_permutations, n_voxels)
    """
    n_sub = len(runs_by_subject)
    n_runs = len(runs_by_subject[0])
    lengths = [r.shape[0] for r in runs_by_subject[0]]
    distinct = min(lengths) - 2 * min_shift + 1
    if distinct < 20:
        # few distinct shifts make a lumpy null whose spread is underestimated: on 32-volume
        # runs with 3 possible shifts, 14% of noise voxels reached p < 0.05
        warnings.warn(f"only {distinct} distinct circular shifts fit the shortest run "
                      f"({min(lengths)} volumes, min_shift {min_shift}): the ceiling's "
                      "p-values will be anti-conservative; lower `ceiling.min_shift_s`.",
                      stacklevel=2)
    shifts = [circular_shifts(lengths, n_permutations, min_shift, seed=seed + s)
              for s in range(1, n_sub)]
    null = np.zeros((n_permutations, runs_by_subject[0][0].shape[1]))
    for run in range(n_runs):
        stack = np.stack([np.asarray(s[run], np.float64) for s in runs_by_subject])
        z = np.stack([zscore_time(x) for x in stack])  # z-scoring commutes with rolling
        for j in range(n_permutations):
            roll = [0] + [shifts[s - 1][j, run] for s in range(1, n_sub)]
            rolled = np.stack([np.roll(stack[s], roll[s], axis=0) for s in range(n_sub)])
            total = rolled.sum(0)
            for s in range(n_sub):
                others = zscore_time(total - rolled[s])  # the others' mean, up to scale
                null[j] += (np.roll(z[s], roll[s], axis=0) * others).mean(0) / (n_sub * n_runs)
    return null


def null_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p-values of ``observed`` (n_targets,) against permutation ``null`` draws
    (n_permutations, n_targets), each target's location and scale its own, the null's shape
    pooled over targets.

    Each target's draws give its mean and SD; the observed value's standardised score is ranked
    among the standardised draws of all targets, each draw standardised by the mean and SD of
    its target's *other* draws (as the observed value is by draws it is not part of): p =
    (1 + #pooled draws >= score) / (1 + #pooled draws). Circular-shift nulls of correlations
    on smooth, short series are skewed and light-tailed, so a normal (t) tail is off by 2x in
    either direction depending on the ridge penalty (on smooth noise: 1.8-4.4 % of voxels at
    p < 0.05); the pooled shape follows the real one (4.6-5.5 %, p < 0.001 at 1-2x nominal;
    tests/test_encoding.py), and with thousands of targets it resolves p-values far below
    1 / (n_permutations + 1), which a per-target rank p-value cannot (BH over 29 000 voxels
    with 400 true effects needs p < 7e-4). Targets whose observed value or draws are not finite
    get NaN and are left out of the pool.
    """
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    n = null.shape[0]
    if n < 3:
        raise ValueError(f"a permutation null needs at least 3 draws per target, got {n}.")
    ok = np.isfinite(observed) & np.isfinite(null).all(0)
    p = np.full(observed.shape, np.nan)
    if not ok.any():
        return p
    draws, obs = null[:, ok], observed[ok]
    score = (obs - draws.mean(0)) / np.maximum(draws.std(0, ddof=1), 1e-6)
    loo_mean = (draws.sum(0) - draws) / (n - 1)
    loo_var = ((draws**2).sum(0) - draws**2 - (n - 1) * loo_mean**2) / (n - 2)
    pooled = np.sort(((draws - loo_mean) / np.sqrt(np.maximum(loo_var, 1e-12))).ravel())
    above = pooled.size - np.searchsorted(pooled, score, side="left")
    p[ok] = (above + 1) / (pooled.size + 1)
    return p


@dataclass
class Ceiling:
    """Inter-subject-correlation noise ceiling over voxels shared by all subjects.

    Attributes
    ----------
    isc : (n_subjects, n_voxels) LOSO ISC of each subject, averaged over runs.
    ceiling : (n_subjects, n_voxels) each subject's ceiling (``ceiling_from_isc``).
    group_isc, group_ceiling : (n_voxels,) the same, from the ISC averaged over subjects.
    p : (n_voxels,) one-sided circular-shift p-value of ``group_isc`` (``null_p``).
    usable : (n_voxels,) True where the ceiling is significant (FDR ``q``) and at least
        ``min_ceiling``: only there are ceiling-normalised scores computed.
    null : (n_permutations, n_voxels) the circular-shift null draws of ``group_isc`` (blocks of
        voxels are joined before ``p`` is computed: the null's shape is pooled over voxels).
    """

    isc: np.ndarray
    ceiling: np.ndarray
    group_isc: np.ndarray
    group_ceiling: np.ndarray
    p: np.ndarray
    usable: np.ndarray
    null: np.ndarray


def isc_ceiling(runs_by_subject: list[list[np.ndarray]], n_permutations: int = 200,
                min_shift: int = 10, q: float = 0.05, min_ceiling: float = 0.1,
                seed: int = 0) -> Ceiling:
    """LOSO inter-subject-correlation ceiling with a circular-shift significance test, for
    subjects who all heard the same runs (run ``i`` of every subject in sync); see
    :func:`story_isc_ceiling`, which it calls with one story per run.

    Parameters
    ----------
    runs_by_subject : per subject, per run, (n_volumes_run, n_voxels) cleaned BOLD, the same
        arrays the encoding models are scored on.
    n_permutations, min_shift : circular-shift null of the ISC (see ``isc_null``).
    q : FDR level over voxels for the ceiling's significance.
    min_ceiling : ceilings below this are not used to normalise (ratios explode near 0).
    """
    stories = {i: dict(enumerate(runs[i] for runs in runs_by_subject))
               for i in range(len(runs_by_subject[0]))}
    return story_isc_ceiling(stories, len(runs_by_subject), n_permutations, min_shift, q,
                             min_ceiling, seed)


def story_isc_ceiling(stories: dict[Any, dict[int, np.ndarray]], n_subjects: int,
                      n_permutations: int = 200, min_shift: int = 10, q: float = 0.05,
                      min_ceiling: float = 0.1, seed: int = 0) -> Ceiling:
    """ISC ceiling when subjects heard different sets of stories (BIDS datasets).

    Each story's ISC is computed among the subjects who heard it (their runs cropped to the
    shortest; every run of a story starts at the same onset). Stories heard by the same set of
    subjects form a group, whose ISC is averaged over its stories and turned into a ceiling with
    that group's subject count (``ceiling_from_isc``); a subject's ISC and ceiling are the
    story-weighted means over the groups it belongs to. Group statistic: the story-weighted mean
    over groups of the subject-averaged ISC; its null: the same mean of each group's
    ``isc_null``; p from ``null_p``; FDR ``q`` over voxels. With one group (every subject heard
    every story) this is exactly :func:`isc_ceiling`. Stories heard by one subject are skipped.

    Parameters
    ----------
    stories : story -> {subject index: (n_volumes, n_voxels) cleaned BOLD on shared voxels}
    n_subjects : number of subjects (indices 0 .. n_subjects - 1)
    """
    groups: dict[tuple[int, ...], list[list[np.ndarray]]] = {}
    n_vox = next(iter(next(iter(stories.values())).values())).shape[1]
    for by_subject in stories.values():
        if len(by_subject) < 2:
            continue
        subjects = tuple(sorted(by_subject))
        n = min(by_subject[k].shape[0] for k in subjects)
        groups.setdefault(subjects, []).append([by_subject[k][:n] for k in subjects])
    isc = np.zeros((n_subjects, n_vox))
    ceiling = np.zeros((n_subjects, n_vox))
    weight = np.zeros(n_subjects)
    if not groups:
        nan = np.full(n_vox, np.nan)
        full = np.full((n_subjects, n_vox), np.nan)
        return Ceiling(isc=full, ceiling=full.copy(), group_isc=nan, group_ceiling=nan,
                       p=np.ones(n_vox), usable=np.zeros(n_vox, bool),
                       null=np.full((n_permutations, n_vox), np.nan))
    n_stories = sum(len(runs) for runs in groups.values())
    group_isc = np.zeros(n_vox)
    group_ceiling = np.zeros(n_vox)
    null = np.zeros((n_permutations, n_vox))
    for g, (subjects, story_runs) in enumerate(groups.items()):
        runs_by_subject = [[run[i] for run in story_runs] for i in range(len(subjects))]
        g_isc = loso_isc(runs_by_subject).mean(1)  # (n_group_subjects, n_vox)
        w = len(story_runs)
        for i, k in enumerate(subjects):
            isc[k] += w * g_isc[i]
            ceiling[k] += w * ceiling_from_isc(g_isc[i], len(subjects))
            weight[k] += w
        group_isc += w / n_stories * g_isc.mean(0)
        group_ceiling += w / n_stories * ceiling_from_isc(g_isc.mean(0), len(subjects))
        null += w / n_stories * isc_null(runs_by_subject, n_permutations, min_shift,
                                         seed + 1000 * g)
    with np.errstate(invalid="ignore", divide="ignore"):
        isc /= weight[:, None]
        ceiling /= weight[:, None]
    p = null_p(group_isc, null)
    usable = fdr_bh(p, q) & (group_ceiling >= min_ceiling)
    return Ceiling(isc=isc, ceiling=ceiling, group_isc=group_isc, group_ceiling=group_ceiling,
                   p=p, usable=usable, null=null)


def repeat_ceiling(runs_by_subject: list[list[np.ndarray]], pairs: list[tuple[int, int]],
                   n_permutations: int = 200, min_shift: int = 10, q: float = 0.05,
                   min_ceiling: float = 0.1, seed: int = 0) -> Ceiling:
    """Ceiling from a stimulus heard twice: each subject's split-half reliability.

    Per subject, the Pearson r between the two runs of each repeated stimulus is averaged over
    ``pairs``; under "stimulus-locked signal + independent noise" it is the reliability
    ``rho``, and ``sqrt(rho)`` is the r a perfect model of that signal reaches on one
    presentation (no Spearman-Brown step: models are scored on single runs). It counts a
    subject's idiosyncratic stimulus-driven responses too, unlike the ISC ceiling. The
    ``Ceiling.isc`` fields hold the reliability here. Null: the second run of each pair
    circularly shifted (by at least ``min_shift``), the reliability averaged over subjects
    and pairs recomputed, FDR ``q`` over voxels.

    Parameters
    ----------
    runs_by_subject : per subject, per run, (n_volumes_run, n_voxels) cleaned BOLD
    pairs : run indices (a, b) that heard the same stimulus, with equal lengths
    """
    if not pairs:
        raise ValueError("a repeated-stimulus ceiling needs a stimulus heard in two runs.")
    rel = np.stack([np.mean([pearson_r(runs[a], runs[b]) for a, b in pairs], 0)
                    for runs in runs_by_subject])
    group_rel = rel.mean(0)
    n = min(runs_by_subject[0][b].shape[0] for _, b in pairs)
    shifts = circular_shifts([n] * len(pairs), n_permutations, min_shift, seed)
    null = np.zeros((n_permutations, rel.shape[1]))
    for runs in runs_by_subject:
        for k, (a, b) in enumerate(pairs):
            za, zb = zscore_time(runs[a]), zscore_time(runs[b])
            for j in range(n_permutations):
                null[j] += (za * np.roll(zb, shifts[j, k], 0)).mean(0) / (
                    len(pairs) * len(runs_by_subject))
    p = null_p(group_rel, null)
    group_ceiling = np.sqrt(np.clip(group_rel, 0, 1))
    usable = fdr_bh(p, q) & (group_ceiling >= min_ceiling)
    return Ceiling(isc=rel, ceiling=np.sqrt(np.clip(rel, 0, 1)), group_isc=group_rel,
                   group_ceiling=group_ceiling, p=p, usable=usable, null=null)


def normalise_by_ceiling(r: np.ndarray, ceiling: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``r / ceiling`` where ``usable`` (else NaN). Values above 1 are kept: they flag a
    ceiling that missed stimulus-driven signal (see the README's caveats)."""
    r, ceiling = np.broadcast_arrays(np.asarray(r, np.float64), np.asarray(ceiling, np.float64))
    ok = np.asarray(usable, bool) & np.isfinite(ceiling) & (ceiling > 0)
    return np.where(ok, r / np.where(ok, ceiling, 1.0), np.nan)


# ------------------------------------------------ group level
#: Bootstrap intervals of the group best layer need this many subjects: n subjects have only
#: C(2n-1, n) distinct resamples (3, 10, 35, 126 for n = 2..5), so below 5 each 2.5% tail of
#: a 95% percentile interval holds about one distinct resample, or none.
BOOTSTRAP_MIN_SUBJECTS = 5
#: Leave-one-subject-out statistics need this many: each left-out subject's layer is picked
#: on the mean of at least 2 others (with 2 subjects it is one other subject's own argmax).
LOSO_MIN_SUBJECTS = 3
GROUP_TESTS = ("auto", "signflip", "fixed", "t")


def signflip_floor(n_subjects: int, n_flips: int = 10_000) -> float:
    """Smallest p-value :func:`sign_flip_p` can give: 2^-n when it enumerates all sign
    patterns, 1 / (n_flips + 1) when it samples them."""
    return 2.0 ** -n_subjects if 2**n_subjects <= n_flips else 1.0 / (n_flips + 1)


def min_subjects_signflip(n_rois: int, q: float = 0.05) -> int:
    """Fewest subjects for which the exact sign-flip test can find one ROI: its floor 2^-n must
    pass Benjamini-Hochberg over the ROI x layer tests when all the layers of one ROI (and
    nothing else) reach it, i.e. 2^-n <= q * n_layers / (n_rois * n_layers) = q / n_rois."""
    return max(1, int(np.ceil(np.log2(max(n_rois, 1) / q) - 1e-12)))


@dataclass
class GroupTest:
    """The group test that the FDR and ``significant`` use, and why.

    Attributes
    ----------
    name : ``signflip``, ``fixed`` or ``t``.
    floor : smallest p the test can give (0 when unbounded).
    reason : one sentence for the log and the report.
    can_pass : False when the floor exceeds q: no ROI x layer test can be significant.
    population : True when the test generalises to the population of subjects.
    """

    name: str
    floor: float
    reason: str
    can_pass: bool
    population: bool


FIXED_EFFECTS_MEANING = (
    "the fixed-effects permutation test compares the group-mean ROI r with the group mean of "
    "the subjects' own circular-shift null draws (paired by permutation index); it tests "
    "H0 'no subject's BOLD follows the stimulus in this ROI' and says nothing about the "
    "population the subjects come from")


def choose_group_test(test: str, n_subjects: int, n_rois: int, q: float = 0.05,
                      n_flips: int = 10_000) -> GroupTest:
    """Resolve ``group.test`` for this many subjects and ROIs.

    ``auto``: the sign-flip test (population inference) when its floor lets one ROI pass FDR
    (:func:`min_subjects_signflip`), else the fixed-effects permutation test
    (:func:`fixed_effects_p`), which has no floor but speaks about these subjects only.
    ``signflip``, ``fixed`` and ``t`` are used as asked; the reason says when the sign-flip
    floor makes significance impossible (above ``q``) or possible only for many strong tests.
    """
    if test not in GROUP_TESTS:
        raise ValueError(f"group.test {test!r} is not one of {', '.join(GROUP_TESTS)}.")
    floor = signflip_floor(n_subjects, n_flips)
    n_min = min_subjects_signflip(n_rois, q)
    floor_text = (f"the sign-flip test's smallest p with {n_subjects} subject(s) is "
                  f"{floor:.3g}" + (f" (2^-{n_subjects})" if 2**n_subjects <= n_flips else ""))
    if test == "auto":
        test = "signflip" if n_subjects >= n_min else "fixed"
        if test == "signflip":
            return GroupTest("signflip", floor, (
                f"group.test auto: exact sign-flip test across {n_subjects} subjects (mean r > 0 "
                f"in the population); {floor_text}, at most q / n_rois = {q:g} / {n_rois} = "
                f"{q / n_rois:.3g}, so an ROI can pass FDR"), True, True)
        return GroupTest("fixed", 0.0, (
            f"group.test auto: fixed-effects permutation test, because {floor_text}, above "
            f"q / n_rois = {q:g} / {n_rois} = {q / n_rois:.3g} (the sign-flip test needs at "
            f"least {n_min} subjects for {n_rois} ROI(s) at q = {q:g}); "
            + FIXED_EFFECTS_MEANING), True, False)
    if test == "fixed":
        return GroupTest("fixed", 0.0, "group.test fixed: " + FIXED_EFFECTS_MEANING, True, False)
    if test == "t":
        return GroupTest("t", 0.0, (
            f"group.test t: one-sided one-sample t-test across {n_subjects} subjects (mean r > "
            "0 in the population, assuming normally distributed subject means)"
            + ("; it needs at least 2 subjects, so nothing is tested" if n_subjects < 2
               else "")), n_subjects >= 2, True)
    if floor > q:
        return GroupTest("signflip", floor, (
            f"group.test signflip: {floor_text}, above q = {q:g}, so no ROI x layer test can "
            f"be significant; with fewer than {n_min} subjects use group.test auto or fixed "
            "(fixed effects, about these subjects only)"), False, True)
    if n_subjects < n_min:
        return GroupTest("signflip", floor, (
            f"group.test signflip: {floor_text}; Benjamini-Hochberg over all ROI x layer tests "
            f"can pass it only when more than {floor / q:.0%} of the tests reach it (one ROI "
            f"alone needs 2^-n <= q / n_rois = {q / n_rois:.3g}, i.e. {n_min} subjects)"),
            True, True)
    return GroupTest("signflip", floor, (
        f"group.test signflip: exact sign-flip test across {n_subjects} subjects (mean r > 0 "
        f"in the population); {floor_text}"), True, True)


def fixed_effects_p(values: np.ndarray, nulls: np.ndarray) -> np.ndarray:
    """Fixed-effects permutation p-value of the group-mean r.

    The observed group mean is compared, with :func:`null_p`, to the group means of the
    subjects' own null draws taken at the same permutation index (each subject's circular-shift
    null keeps its own autocorrelation, run lengths and bias). H0: no subject's BOLD follows the
    stimulus in this ROI. A fixed-effects test: it does not generalise to the population.

    Parameters
    ----------
    values : (n_subjects, n_tests) observed r (e.g. ROI-mean r per ROI and layer).
    nulls : (n_subjects, n_permutations, n_tests) each subject's null draws of the same r.

    Returns
    -------
    p : (n_tests,) one-sided p-values.
    """
    values = np.asarray(values, dtype=np.float64)
    nulls = np.asarray(nulls, dtype=np.float64)
    if nulls.ndim != 3 or nulls.shape[0] != values.shape[0] or nulls.shape[2] != values.shape[1]:
        raise ValueError(f"nulls {nulls.shape} do not match values {values.shape} as "
                         "(n_subjects, n_permutations, n_tests).")
    return null_p(values.mean(0), nulls.mean(0))


def sign_flip_p(values: np.ndarray, n_flips: int = 10_000, seed: int = 0) -> np.ndarray:
    """One-sided sign-flip permutation p-value of mean > 0 across subjects.

    Exact (all 2^n sign patterns) when 2^n <= ``n_flips``, else ``n_flips`` random patterns
    plus the observed one. With n subjects the smallest exact p is 2^-n.

    Parameters
    ----------
    values : array of shape (n_subjects, n_tests)
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if 2**n <= n_flips:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(n_flips, n))])
    observed = values.mean(0)
    null = signs @ values / n  # (n_patterns, n_tests)
    return (null >= observed - 1e-12).mean(0)


def t_test_p(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t statistic and one-sided p-value of mean > 0, values (n_subjects, n_tests).
    """
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n < 2:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan
    sem = values.std(0, ddof=1) / np.sqrt(n)
    tstat = values.mean(0) / np.where(sem > 0, sem, np.nan)
    return tstat, t.sf(tstat, n - 1)


def bootstrap_best_layer(profiles: np.ndarray, layers: Sequence[int], n_boot: int = 2000,
                         level: float = 0.95, seed: int = 0) -> dict[str, np.ndarray]:
    """Group best layer and its bootstrap-over-subjects distribution.

    Parameters
    ----------
    profiles : array of shape (n_subjects, n_layers, n_units), r per subject, layer, ROI.
    layers : layer numbers of the rows.

    Returns
    -------
    dict of (n_units,) arrays: ``best_layer`` (argmax of the subject mean), ``layer_ci_low``
    and ``layer_ci_high`` (percentile interval of the bootstrap argmax), ``bootstrap_share``
    (share of resamples choosing ``best_layer``), and ``layer_distribution`` of shape
    (n_layers, n_units) (share of resamples choosing each layer).
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    n_sub, n_layers, n_units = profiles.shape
    numbers = np.asarray([int(v) for v in layers])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_sub, size=(n_boot, n_sub))
    boot = numbers[profiles[draws].mean(1).argmax(1)]  # (n_boot, n_units)
    best = numbers[profiles.mean(0).argmax(0)]
    tail = 100 * (1 - level) / 2
    dist = np.stack([(boot == v).mean(0) for v in numbers])
    return {"best_layer": best,
            "layer_ci_low": np.percentile(boot, tail, axis=0, method="inverted_cdf"),
            "layer_ci_high": np.percentile(boot, 100 - tail, axis=0, method="inverted_cdf"),
            "bootstrap_share": (boot == best).mean(0), "layer_distribution": dist}


def loso_best_layer(profiles: np.ndarray, layers: Sequence[int]) -> dict[str, np.ndarray]:
    """Group best layer scored on independent subjects: for each subject, the layer with the
    highest mean r over the *other* subjects, and this subject's r at that layer.

    Parameters
    ----------
    profiles : array of shape (n_subjects, n_layers, n_units)

    Returns
    -------
    dict: ``layer_by_subject`` (n_subjects, n_units), ``independent_r`` (n_subjects, n_units).
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    n_sub = profiles.shape[0]
    numbers = np.asarray([int(v) for v in layers])
    if n_sub < 2:
        nan = np.full((n_sub, profiles.shape[2]), np.nan)
        return {"layer_by_subject": nan, "independent_r": nan}
    total = profiles.sum(0)
    pick = np.stack([((total - profiles[s]) / (n_sub - 1)).argmax(0) for s in range(n_sub)])
    held = np.take_along_axis(profiles, pick[:, None], 1)[:, 0]
    return {"layer_by_subject": numbers[pick], "independent_r": held}
