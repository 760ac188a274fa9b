"""XGBoost and SGDClassifier trained from the store vs from numpy arrays in memory (issue 20)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, target

TITLE = "XGBoost / SGDClassifier trained from the store vs in-memory numpy (issue 20)"
DEFAULT_ROWS = 547_000
LABEL = "queue"  # the binary head of configs/large.yaml: log-loss is the binary one
SPLITS = "default"  # `chunkstore split --seed 0`: train/val/test 0.8/0.1/0.1; stats/train from it
ROUNDS = 30
EPOCHS = 3
PARAMS = {"tree_method": "hist", "objective": "binary:logistic", "eval_metric": "logloss",
          "max_depth": 6, "eta": 0.3, "max_bin": 256, "seed": 0, "nthread": 2}
ABOUT = f"""\
Store: `configs/large.yaml` (893 float32 features), label head `{LABEL}` (2 classes), split set
`splits/{SPLITS}` (random 0.8/0.1/0.1). Each method is its own process, timed from start to
exit (imports, reading, building, training). XGBoost `hist`, {ROUNDS} rounds, {PARAMS}:
(a) `ds.to_xgboost(split="train")` -> QuantileDMatrix fed chunk by chunk, validation matrix
the same with `ref=`; (b) train and val rows read into numpy arrays (whole chunks into
preallocated arrays, the frugal way), then `xgboost.QuantileDMatrix(X)`. SGDClassifier
(log-loss, {EPOCHS} epochs, features normalized with `stats/train`, NaN -> 0):
(c) `ds.partial_fit(batch_size=4096, normalize=True, fill_nan=0.0)`, validation log-loss
streamed over the val chunks; (d) `fit(X_train)` on numpy arrays normalized the same way.
(e) is (a) with `external_memory=True` (XGBoost pages its quantised matrix to disk).
*Data MiB*: peak RSS minus the process's RSS after its imports."""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _in_memory(ds: Any, part: str) -> tuple[Any, Any]:
    """Rows of ``part`` as numpy arrays, read whole chunks at a time into preallocated arrays."""
    import numpy as np

    member = ds.split_array(SPLITS).mask(part)
    x = np.empty((int(member.sum()), ds.features.shape[1]), np.float32)
    y = np.asarray(ds.labels[LABEL][:])[member].astype(np.float32)
    at, block = 0, ds.chunk_rows * 16
    for lo in range(0, ds.n_samples, block):
        keep = member[lo:lo + block]
        if keep.any():
            rows = np.asarray(ds.features[lo:lo + len(keep)])[keep]
            x[at:at + len(rows)] = rows
            at += len(rows)
    return x, y


def _normalized(ds: Any, x: Any) -> Any:
    """``x`` normalized with ``stats/train`` in place, NaN -> 0, as ``partial_fit`` does."""
    import numpy as np

    from chunkstore.read.loader import normalize_, train_normalization

    x = normalize_(x, train_normalization(ds))
    np.nan_to_num(x, copy=False, nan=0.0)
    return x


def _stream_logloss(ds: Any, clf: Any) -> float:
    import numpy as np

    from chunkstore.interop.training import StoreBatches

    batches = StoreBatches(ds, member=ds.split_array(SPLITS).mask("val"), label=LABEL,
                           weight=None)
    total, n = 0.0, 0
    for i in range(len(batches)):
        b = batches.read(i)
        p = np.clip(clf.predict_proba(_normalized(ds, b["features"]))[:, 1], 1e-15, 1 - 1e-15)
        y = b["label"]
        total -= float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
        n += len(y)
    batches.close()
    return total / n


def step(store: str, method: str, cache_dir: str | None = None) -> dict[str, Any]:
    import xgboost as xgb
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss

    import chunkstore

    base, t0 = _rss(), time.perf_counter()
    ds = chunkstore.open(store)
    out: dict[str, Any] = {}
    if method.startswith("xgb"):
        if method in ("xgb-store", "xgb-extmem"):
            ext = {"external_memory": method == "xgb-extmem", "cache_dir": cache_dir}
            dtrain = ds.to_xgboost(split="train", label=LABEL, splits=SPLITS, **ext)
            dval = ds.to_xgboost(split="val", label=LABEL, splits=SPLITS, ref=dtrain, **ext)
        else:
            xt, yt = _in_memory(ds, "train")
            xv, yv = _in_memory(ds, "val")
            dtrain = xgb.QuantileDMatrix(xt, label=yt, max_bin=PARAMS["max_bin"])
            dval = xgb.QuantileDMatrix(xv, label=yv, ref=dtrain)
        out["build_s"] = time.perf_counter() - t0
        evals: dict[str, Any] = {}
        xgb.train(PARAMS, dtrain, ROUNDS, evals=[(dval, "val")], evals_result=evals)
        out["logloss"] = float(evals["val"]["logloss"][-1])
    else:
        clf = SGDClassifier(loss="log_loss", random_state=0)
        if method == "sgd-store":
            ds.partial_fit(clf, split=f"{SPLITS}/train", label=LABEL, epochs=EPOCHS,
                           batch_size=4096, normalize=True, fill_nan=0.0)
            out["logloss"] = _stream_logloss(ds, clf)
        else:
            xt, yt = _in_memory(ds, "train")
            xt = _normalized(ds, xt)
            clf.set_params(max_iter=EPOCHS, tol=None)
            import warnings

            with warnings.catch_warnings():  # max_iter reached on purpose: same epochs as (c)
                warnings.simplefilter("ignore")
                clf.fit(xt, yt)
            xv, yv = _in_memory(ds, "val")
            xv = _normalized(ds, xv)
            out["logloss"] = float(log_loss(yv, clf.predict_proba(xv)[:, 1], labels=[0, 1]))
    out["data_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / MIB
    out["in_process_s"] = time.perf_counter() - t0
    return out


def _ensure_split(store: str) -> None:
    import zarr

    group = zarr.open_group(store, mode="r")
    cli = [sys.executable, "-m", "chunkstore.cli"]
    if f"splits/{SPLITS}" not in group:
        subprocess.run([*cli, "split", store, "--split-set", SPLITS, "--seed", "0", "--quiet"],
                       check=True)
    if "stats/train" not in group:
        subprocess.run([*cli, "stats", store, "--split", "train", "--no-correlation",
                        "--quiet"], check=True)


def run(ctx: Context) -> dict[str, Any]:
    store = str(fixtures.large_store(ctx.rows))
    _ensure_split(store)
    names = {"xgb-store": "(a) XGBoost, ds.to_xgboost (chunk iterator)",
             "xgb-numpy": "(b) XGBoost, numpy arrays in memory",
             "sgd-store": "(c) SGDClassifier, ds.partial_fit",
             "sgd-numpy": "(d) SGDClassifier, fit on numpy arrays",
             "xgb-extmem": "(e) XGBoost, ds.to_xgboost(external_memory=True)"}
    cache = str(ctx.work / "xgb-cache")
    best = ctx.best({k: (lambda k=k, v=v: ctx.step(v, "boosting:step", store=store, method=k,
                                                   cache_dir=cache))
                     for k, v in names.items()})
    rows = [{"method": v, **best[k].fields(rss="process"), "data MiB": best[k].result["data_mib"],
             "val log-loss": best[k].result["logloss"]} for k, v in names.items()]

    def ratio(a: str, b: str, key: Any) -> float:
        return float(key(best[a]) / key(best[b]))

    rss = lambda r: r.max_process  # noqa: E731
    loss = lambda r: r.result["logloss"]  # noqa: E731
    return {"tables": [{"rows": rows}], "targets": [
        target("XGBoost peak RSS (a)/(b)", ratio("xgb-store", "xgb-numpy", rss), "<=", 0.3),
        target("XGBoost external memory peak RSS (e)/(b)",
               ratio("xgb-extmem", "xgb-numpy", rss), "<=", 0.3),
        target("XGBoost external memory wall (e)/(b)",
               ratio("xgb-extmem", "xgb-numpy", lambda r: r.wall), "<=", 1.3),
        target("XGBoost wall (a)/(b)", ratio("xgb-store", "xgb-numpy", lambda r: r.wall),
               "<=", 1.3),
        target("XGBoost val log-loss (a)/(b)", ratio("xgb-store", "xgb-numpy", loss), "<=",
               1.01, "{:.4f}"),
        target("SGD peak RSS (c)/(d)", ratio("sgd-store", "sgd-numpy", rss), "<=", 0.3),
        target("SGD wall (c)/(d)", ratio("sgd-store", "sgd-numpy", lambda r: r.wall), "<=",
               1.3),
        target("SGD val log-loss (c)/(d)", ratio("sgd-store", "sgd-numpy", loss), "<=", 1.01,
               "{:.4f}")],
        "notes": ["peak RSS includes the interpreter and its imports (xgboost, sklearn, zarr: "
                  "about the same in every method); *data MiB* leaves them out"]}
