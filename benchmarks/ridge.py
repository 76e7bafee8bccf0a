"""Ridge encoding benchmark: brainalign's engine vs himalaya and scikit-learn, same CV work.

Every contender does the same nested, grouped cross-validation on the same simulated problem:
for each of the outer folds (one run held out), a per-voxel penalty is chosen from the alpha grid
by inner leave-one-run-out CV inside the training runs (validation R², averaged over the inner
folds), the model is refitted on all training runs with each voxel's penalty and the held-out
run is predicted; the score is the held-out Pearson r per voxel and fold.

Each contender runs in its own Python process (so peak RSS is its own), on data generated
there from a fixed seed; data generation is not timed. See benchmarks/README.md.

    python benchmarks/ridge.py            # 1500 TRs x 768 features x 4 delays, 20 000 voxels
    python benchmarks/ridge.py --quick    # smoke run (~1 min)
    python benchmarks/ridge.py --scale    # Narratives-scale subject: time and memory figure
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


# ------------------------------------------------------------------------------------- data
def make_problem(n_trs: int, n_features: int, n_delays: int, n_voxels: int, n_runs: int,
                 seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Simulated encoding problem: per run, delayed features (n, n_features * n_delays) and BOLD
    (n, n_voxels), both z-scored within the run (as the pipeline's BOLD is, and so that every
    contender sees identical, already standardised data). A third of the voxels are driven by a
    low-rank projection of the features at a log-uniform SNR; the rest are AR(1) noise."""
    from brainalign.alignment import delay_stack

    rng = np.random.default_rng(seed)
    n_latent = max(8, n_features // 8)
    # speech-model-like features: correlated (low-rank plus noise), smooth in time
    latent = rng.standard_normal((n_trs, n_latent)).astype(np.float32)
    for t in range(1, n_trs):
        latent[t] = 0.7 * latent[t - 1] + 0.71 * latent[t]
    mix = rng.standard_normal((n_latent, n_features)).astype(np.float32)
    feats = latent @ mix + 0.5 * rng.standard_normal((n_trs, n_features)).astype(np.float32)
    bounds = np.linspace(0, n_trs, n_runs + 1).astype(int)
    x_runs, y_runs = [], []
    rank = 16
    weights_a = rng.standard_normal((n_features * n_delays, rank)).astype(np.float32)
    weights_b = rng.standard_normal((rank, n_voxels)).astype(np.float32)
    n_signal = n_voxels // 3
    gain = np.zeros(n_voxels, np.float32)
    gain[:n_signal] = np.sqrt(10 ** rng.uniform(-1.5, 0.5, n_signal))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        f = feats[a:b]
        # no wrap-around: the first volumes see no stimulus
        x = zscore(delay_stack(f, list(range(1, n_delays + 1))))
        sig = zscore((x @ weights_a) @ weights_b)
        noise = rng.standard_normal((b - a, n_voxels)).astype(np.float32)
        for t in range(1, b - a):
            noise[t] = 0.5 * noise[t - 1] + 0.866 * noise[t]
        x_runs.append(x)
        y_runs.append(zscore(gain * sig + zscore(noise)))
    return x_runs, y_runs


def zscore(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    sd = a.std(0)
    return (a / np.where(sd < 1e-8, 1.0, sd)).astype(np.float32)


def pearson(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return (zscore(y).astype(np.float64) * zscore(pred)).mean(0)


def same_alpha(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Same grid value (himalaya returns exp(log(alpha)), which can differ in the last bits)."""
    return np.isclose(a, b, rtol=1e-4, atol=0)


def row_index(lengths: list[int], runs: list[int]) -> np.ndarray:
    bounds = np.cumsum([0, *lengths])
    return np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in runs])


# ------------------------------------------------------------------------------ contenders
def run_brainalign(x_runs, y_runs, alphas, backend: str, batch: int, inner_stride=1,
                   alpha_search="grid"):
    """brainalign's nested CV; every validation volume and penalty unless ``inner_stride`` and
    ``alpha_search`` say otherwise (``auto`` and ``refine``: as the pipeline runs it)."""
    from brainalign.encoding import cross_validate

    cv = cross_validate(x_runs, y_runs, alphas, batch_voxels=batch, backend=backend,
                        inner_stride=inner_stride, alpha_search=alpha_search)
    return cv.alpha, cv.r_folds


def run_fit_layer(x_runs, y_runs, alphas, backend: str, batch: int):
    """The pipeline's whole per-layer computation: nested CV plus the 50-permutation null."""
    from brainalign.encoding import FitOptions, fit_layer

    s = fit_layer(x_runs, y_runs, alphas, FitOptions(n_permutations=50, min_shift=10,
                                                     batch_voxels=batch, backend=backend))
    return s.alpha, s.r_folds


def run_himalaya(x_runs, y_runs, alphas, backend: str, batch: int):
    """himalaya RidgeCV per outer fold, with the inner leave-one-run-out splits as its cv,
    per-voxel alphas (local_alpha) scored by R² and no intercept (data are z-scored)."""
    import himalaya.backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score

    be = himalaya.backend.set_backend(backend, on_error="raise")
    lengths = [len(x) for x in x_runs]
    x_all, y_all = np.concatenate(x_runs), np.concatenate(y_runs)
    n_runs = len(x_runs)
    alpha_folds = np.zeros((n_runs, y_all.shape[1]), np.float32)
    r_folds = np.zeros_like(alpha_folds)
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        inner_lengths = [lengths[i] for i in train]
        splits = [(row_index(inner_lengths, [j for j in range(len(train)) if j != v]),
                   row_index(inner_lengths, [v])) for v in range(len(train))]
        tr, te = row_index(lengths, train), row_index(lengths, [test])
        model = RidgeCV(alphas=alphas, cv=splits, fit_intercept=False,
                        solver_params=dict(score_func=r2_score, n_targets_batch=batch,
                                           n_alphas_batch=len(alphas), warn=False))
        model.fit(be.asarray(x_all[tr]), be.asarray(y_all[tr]))
        pred = be.to_numpy(model.predict(be.asarray(x_all[te])))
        alpha_folds[test] = be.to_numpy(model.best_alphas_)
        r_folds[test] = pearson(y_all[te], pred)
    return alpha_folds, r_folds


def run_sklearn(x_runs, y_runs, alphas, backend: str, batch: int):
    """scikit-learn has no per-target alpha with a grouped cv (RidgeCV's alpha_per_target
    needs cv=None, i.e. leave-one-TR-out), so the same work is written with its Ridge:
    LeaveOneGroupOut inside the training runs, Ridge(alpha) per alpha and inner fold, per-voxel
    selection, one refit per chosen alpha on the voxels that chose it."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneGroupOut

    lengths = [len(x) for x in x_runs]
    x_all, y_all = np.concatenate(x_runs), np.concatenate(y_runs)
    groups = np.repeat(np.arange(len(x_runs)), lengths)
    n_runs = len(x_runs)
    alpha_folds = np.zeros((n_runs, y_all.shape[1]), np.float32)
    r_folds = np.zeros_like(alpha_folds)
    for test in range(n_runs):
        tr, te = groups != test, groups == test
        x_tr, y_tr = x_all[tr], y_all[tr]
        score = np.zeros((len(alphas), y_all.shape[1]))
        for itr, ival in LeaveOneGroupOut().split(x_tr, groups=groups[tr]):
            for k, a in enumerate(alphas):
                pred = Ridge(alpha=a, fit_intercept=False).fit(x_tr[itr], y_tr[itr]).predict(
                    x_tr[ival])
                yv = y_tr[ival]
                score[k] += 1 - ((yv - pred) ** 2).sum(0) / ((yv - yv.mean(0)) ** 2).sum(0)
        best = alphas[np.argmax(score, 0)]
        pred = np.zeros_like(y_all[te])
        for a in np.unique(best):
            sel = best == a
            fit = Ridge(alpha=a, fit_intercept=False).fit(x_tr, y_tr[:, sel])
            pred[:, sel] = fit.predict(x_all[te]).reshape(len(pred), -1)
        alpha_folds[test] = best
        r_folds[test] = pearson(y_all[te], pred)
    return alpha_folds, r_folds


def run_sklearn_loo(x_runs, y_runs, alphas, backend: str, batch: int):
    """For reference only, NOT the same work: sklearn's RidgeCV(alpha_per_target=True) with its
    efficient leave-one-TR-out (cv=None), the closest built-in; refit and held-out r as above."""
    from sklearn.linear_model import RidgeCV

    lengths = [len(x) for x in x_runs]
    x_all, y_all = np.concatenate(x_runs), np.concatenate(y_runs)
    groups = np.repeat(np.arange(len(x_runs)), lengths)
    alpha_folds = np.zeros((len(x_runs), y_all.shape[1]), np.float32)
    r_folds = np.zeros_like(alpha_folds)
    for test in range(len(x_runs)):
        tr, te = groups != test, groups == test
        model = RidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=False).fit(
            x_all[tr], y_all[tr])
        alpha_folds[test] = model.alpha_
        r_folds[test] = pearson(y_all[te], model.predict(x_all[te]))
    return alpha_folds, r_folds


CONTENDERS = {
    "brainalign-numpy": (run_brainalign, "numpy"),
    "brainalign-torch": (run_brainalign, "torch-cpu"),
    "himalaya-numpy": (run_himalaya, "numpy"),
    "himalaya-torch": (run_himalaya, "torch"),
    "sklearn": (run_sklearn, ""),
    "sklearn-loo": (run_sklearn_loo, ""),
}
EXTRA = {"brainalign-cv": (functools.partial(run_brainalign, inner_stride="auto",
                                              alpha_search="refine"), "numpy"),
         "brainalign-fit-layer": (run_fit_layer, "numpy"),
         "brainalign-fit-layer-cuda": (run_fit_layer, "torch-cuda")}


def engine_flops(lengths: list[int], n_features: int, n_alphas: int, n_voxels: int) -> float:
    """Useful floating-point operations of the brainalign algorithm (matrix products and the
    eigendecompositions, counted as 4/3 n^3 + 2 n^3): per split the Gram and cross-Gram
    matrices, the eigendecomposition, the hat matrices, and their product with the BOLD."""
    total = 0.0
    runs = range(len(lengths))

    def split(train: list[int], test: int, n_hats: int, n_rows_out: int) -> float:
        n_tr, n_te = sum(lengths[i] for i in train), lengths[test]
        f = 2 * n_tr * n_tr * n_features + 2 * n_te * n_tr * n_features  # Gram, cross-Gram
        f += (4 / 3 + 2) * n_tr**3 + 2 * n_te * n_tr * n_tr  # eigh, kvu
        f += 2 * n_hats * n_te * n_tr * n_tr  # hat matrices
        return f + 2 * n_rows_out * n_tr * n_voxels  # hats @ BOLD

    for test in runs:
        train = [i for i in runs if i != test]
        for val in train:
            total += split([i for i in train if i != val], val, n_alphas,
                           n_alphas * lengths[val])
        total += split(train, test, n_alphas, lengths[test])  # one hat per used alpha at most
    return total


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of the best of ``repeats`` n x n matrix products (numpy and torch)."""
    import torch

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = 0.0
    for mul in (np.matmul, lambda p, q: torch.from_numpy(p) @ torch.from_numpy(q)):
        mul(a, a)
        for _ in range(repeats):
            t0 = time.perf_counter()
            mul(a, a)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


# ---------------------------------------------------------------------------------- driver
def worker(args: argparse.Namespace) -> None:
    x_runs, y_runs = make_problem(args.trs, args.features, args.delays, args.voxels, args.folds)
    if args.only_voxels:
        y_runs = [y[:, :args.only_voxels] for y in y_runs]
    alphas = np.logspace(args.alpha_min, args.alpha_max, args.alphas).astype(np.float32)
    fn, backend = {**CONTENDERS, **EXTRA}[args.worker]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    alpha_folds, r_folds = fn(x_runs, y_runs, alphas, backend, args.batch)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    np.savez(args.out, alpha=alpha_folds, r=r_folds)
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": usage.ru_maxrss / 1024,
                      "rss_data_mb": usage0.ru_maxrss / 1024}))


def spawn(name: str, args: argparse.Namespace, out: Path, only_voxels: int = 0) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", name, "--out", str(out),
           "--trs", str(args.trs), "--features", str(args.features), "--delays",
           str(args.delays), "--voxels", str(args.voxels), "--folds", str(args.folds),
           "--alphas", str(args.alphas), "--alpha-min", str(args.alpha_min), "--alpha-max",
           str(args.alpha_max), "--batch", str(args.batch), "--only-voxels", str(only_voxels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as d:
        res["alpha"], res["r"] = d["alpha"], d["r"]
    return res


def compare(args: argparse.Namespace) -> None:
    names = [n for n in args.contenders.split(",") if n]
    print(f"problem: {args.trs} TRs x {args.features} features x {args.delays} delays, "
          f"{args.voxels} voxels, {args.alphas} alphas 1e{args.alpha_min:g}..1e"
          f"{args.alpha_max:g}, {args.folds} grouped folds (runs); nested leave-one-run-out "
          f"inner CV; {os.cpu_count()} CPUs; voxel batch {args.batch}", flush=True)
    peak = matmul_peak()
    print(f"float32 matmul peak (before): {peak:.1f} GFLOP/s", flush=True)
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            sub = args.sklearn_voxels if name.startswith("sklearn") else 0
            out = Path(args.save_dir or tmp) / f"{name}.npz"
            out.parent.mkdir(parents=True, exist_ok=True)
            res[name] = r = spawn(name, args, out, sub)
            nv = sub or args.voxels
            r["n_voxels"] = nv
            r["wall_full"] = r["wall"] * args.voxels / nv
            r["cpu_full"] = r["cpu"] * args.voxels / nv
            extra = (f" (measured on {nv} voxels: {r['wall']:.1f} s, scaled linearly)"
                     if sub else "")
            peak = max(peak, matmul_peak())  # between contenders too: the cores are shared
            print(f"{name:18s} {r['wall_full']:8.1f} s wall, {r['cpu_full']:8.1f} s CPU, peak "
                  f"RSS {r['rss_mb']:5.0f} MB (data alone {r['rss_data_mb']:.0f} MB){extra}",
                  flush=True)
    peak = max(peak, matmul_peak())
    print(f"float32 matmul peak (best of before, between and after): {peak:.1f} GFLOP/s")
    lengths = [len(a) for a in np.array_split(np.arange(args.trs), args.folds)]
    flops = engine_flops(lengths, args.features * args.delays, args.alphas, args.voxels)

    ref_name = "himalaya-numpy" if "himalaya-numpy" in res else None
    him = [n for n in res if n.startswith("himalaya")]
    print(f"\n{'contender':18s} {'wall s':>8s} {'x himalaya':>10s} {'CPU s':>8s} "
          f"{'x him CPU':>9s} {'alphas-agree %':>15s} {'max |dr|':>9s} {'rss MB':>7s}")
    fastest_him = min((res[n]["wall_full"] for n in him), default=float("nan"))
    fastest_him_cpu = min((res[n]["cpu_full"] for n in him), default=float("nan"))
    for name, r in res.items():
        agree = dr = float("nan")
        if ref_name:
            ref = res[ref_name]
            nv = min(r["n_voxels"], ref["n_voxels"])
            agree = 100 * np.mean(same_alpha(r["alpha"][:, :nv], ref["alpha"][:, :nv]))
            dr = float(np.abs(r["r"][:, :nv] - ref["r"][:, :nv]).max())
        print(f"{name:18s} {r['wall_full']:8.1f} {fastest_him / r['wall_full']:10.2f} "
              f"{r['cpu_full']:8.1f} {fastest_him_cpu / r['cpu_full']:9.2f} "
              f"{agree:15.2f} {dr:9.2e} {r['rss_mb']:7.0f}")
    engine = next((n for n in ("brainalign-numpy", "brainalign-torch") if n in res), None)
    if engine is None:
        return
    e = res[engine]
    gflops = flops / e["wall"] / 1e9
    print(f"\n{engine}: {flops / 1e9:.0f} GFLOP counted, {gflops:.1f} GFLOP/s achieved, "
          f"{100 * gflops / peak:.0f}% of the matmul peak")
    if ref_name:
        ref = res[ref_name]
        same = same_alpha(e["alpha"], ref["alpha"])
        agree = 100 * np.mean(same)
        diff = np.abs(e["r"] - ref["r"])
        dr = float(diff.max())
        print(f"vs {ref_name}: max |dr| {dr:.1e} over all (fold, voxel) pairs, "
              f"{float(diff[same].max()) if same.any() else float('nan'):.1e} where the chosen "
              f"alpha is the same; {int((diff > 1e-4).sum())} of {diff.size} pairs differ by "
              "more than 1e-4")
        share = np.bincount(np.searchsorted(np.logspace(args.alpha_min, args.alpha_max,
                                                        args.alphas).astype(np.float32),
                                            e["alpha"].ravel()), minlength=args.alphas)
        print(f"chosen alphas (share per grid value, %): "
              f"{np.round(100 * share / share.sum(), 1).tolist()}")
    else:
        agree = dr = float("nan")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"ridge: {fastest_him / e['wall']:.2f} x himalaya, alphas-agree {agree:.2f}%, "
          f"max-dr {dr:.1e}, {100 * gflops / peak:.0f}% of peak, rss {e['rss_mb']:.0f} MB")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def scale_fit(name: str, counts: list[int], runs: list[dict], args: argparse.Namespace
              ) -> tuple[float, float, float]:
    """(fixed s, s per voxel, peak RSS MB at --scale-voxels) of one layer from the worker's runs
    on ``counts`` voxels, wall time fitted by least squares (three points, so a noisy one shows
    as a poor fit)."""
    walls = np.array([r["wall"] for r in runs])
    per_vox, fixed = np.polyfit(counts, walls, 1)
    resid = walls - (fixed + per_vox * np.array(counts))
    # the BOLD of every voxel is held (4 bytes x TRs x voxels); everything else is bounded by
    # the voxel batch (the measured RSS also holds the simulation's temporaries, which do not
    # follow the voxel count)
    rss = max(r["rss_mb"] for r in runs) + 4 * args.trs * (args.scale_voxels - counts[-1]) / 2**20
    print(f"{name}: " + ", ".join(f"{n} voxels {r['wall']:.1f} s (rss {r['rss_mb']:.0f} MB"
                                  + (f"; tries {' / '.join(f'{t:.1f}' for t in r['tries'])} s"
                                     if len(r.get("tries", [])) > 1 else "") + ")"
                                  for n, r in zip(counts, runs, strict=True))
          + f" -> fixed {max(fixed, 0):.1f} s + {1e3 * per_vox:.2f} ms/voxel (fit residuals "
          f"{', '.join(f'{x:+.1f}' for x in resid)} s)", flush=True)
    return max(float(fixed), 0.0), max(float(per_vox), 0.0), float(rss)


def scale(args: argparse.Namespace) -> None:
    """One Narratives-scale subject (~3000 TRs, 80 000 voxels, 13 layers): the pipeline's
    per-layer computation (nested CV + 50-permutation null, and the CV alone) measured on three
    voxel counts of one layer, each the fastest of ``--repeats`` interleaved runs (on a shared
    machine the same run took 1.5 x as long minutes apart); time = fixed + per-voxel cost,
    extrapolated linearly in voxels and layers. Ends with the machine-readable ``scale:`` line
    (and ``scale-gpu:`` when CUDA is present)."""
    from brainalign.precision import cpu_model_name

    cores = os.cpu_count()
    print(f"scale: {args.trs} TRs x {args.features} features x {args.delays} delays, "
          f"{args.folds} runs, {args.alphas} alphas; one of {args.layers} layers measured on up "
          f"to {args.voxels} of {args.scale_voxels} voxels; {cpu_model_name()}, {cores} CPUs, load "
          f"average {os.getloadavg()[0]:.2f} at the start", flush=True)
    names = ["brainalign-cv", "brainalign-fit-layer"]
    if _cuda():
        names.append("brainalign-fit-layer-cuda")
    counts = [max(1, args.voxels // 4), max(2, args.voxels // 2), args.voxels]
    peak_start = matmul_peak()
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:  # contenders interleaved: a slow spell of the machine hits them alike
            tries: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(args.repeats):
                for name in names:
                    tries[name].append(spawn(name, args, Path(tmp) / f"{name}-{n}.npz", n))
            for name in names:  # the fastest try: its time with the least interference
                best = min(tries[name], key=lambda r: r["wall"])
                best["rss_mb"] = max(r["rss_mb"] for r in tries[name])
                best["tries"] = [r["wall"] for r in tries[name]]
                runs[name].append(best)
    fits = {name: scale_fit(name, counts, runs[name], args) for name in names}
    gpu = fits.get("brainalign-fit-layer-cuda")
    print(f"float32 matmul peak (2048 x 2048, numpy or torch): {matmul_peak():.0f} GFLOP/s at the "
          f"end, {peak_start:.0f} at the start (the machine's speed around the run)")
    hours = {}
    for name, label in (("brainalign-cv", "nested CV"),
                        ("brainalign-fit-layer", "nested CV + 50-permutation null")):
        fixed, per_vox, rss = fits[name]
        layer = fixed + per_vox * args.scale_voxels
        hours[name] = args.layers * layer / 3600
        print(f"extrapolated, {label}: one layer x {args.scale_voxels} voxels {layer / 60:.1f} "
              f"min, one subject ({args.layers} layers) {hours[name]:.2f} h; peak RSS "
              f"~{rss / 1024:.1f} GB (the largest measured plus the BOLD of the other voxels)")
    total = hours["brainalign-fit-layer"]
    null_share = 100 * min(1.0, max(0.0, total - hours["brainalign-cv"]) / total)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print(f"scale: {total:.2f} h per subject ({args.layers} layers, {args.scale_voxels} voxels, "
          f"{args.trs} TRs, 50 permutations) on {cores} cores, peak "
          f"{fits['brainalign-fit-layer'][2] / 1024:.1f} GB, null share {null_share:.0f}%")
    if gpu is not None:
        fixed, per_vox, rss = gpu
        import torch

        minutes = args.layers * (fixed + per_vox * args.scale_voxels) / 60
        print(f"scale-gpu: {minutes:.1f} min per subject ({args.layers} layers, "
              f"{args.scale_voxels} voxels, {args.trs} TRs, 50 permutations) on "
              f"{torch.cuda.get_device_name()}, host peak {rss / 1024:.1f} GB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke-test problem")
    p.add_argument("--scale", action="store_true", help="Narratives-scale time/memory figure")
    p.add_argument("--trs", type=int, default=1500)
    p.add_argument("--features", type=int, default=768)
    p.add_argument("--delays", type=int, default=4)
    p.add_argument("--voxels", type=int, default=20_000)
    p.add_argument("--folds", type=int, default=5, help="runs = grouped outer folds")
    p.add_argument("--alphas", type=int, default=10)
    p.add_argument("--alpha-min", type=float, default=1.0)
    p.add_argument("--alpha-max", type=float, default=7.0)
    p.add_argument("--batch", type=int, default=10_000, help="voxels per batch")
    p.add_argument("--sklearn-voxels", type=int, default=1000,
                   help="sklearn runs on this many voxels; its time is scaled linearly")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--save-dir", help="keep each contender's chosen alphas and r here")
    p.add_argument("--scale-voxels", type=int, default=80_000)
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--repeats", type=int, default=2,
                   help="--scale: runs of each contender per voxel count, interleaved; the "
                        "fastest is fitted (default 2)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--only-voxels", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.trs, args.features, args.voxels, args.sklearn_voxels = 500, 128, 2000, 500
    if args.scale:
        if args.trs == 1500:
            args.trs = 3000
        if args.voxels == 20_000:
            args.voxels = 8000
        return scale(args)
    compare(args)


if __name__ == "__main__":
    main()
