"""A whole sweep: every planned run not yet in `results.csv`, then the reports."""

import functools
import os
import time

from lamb import _files
from lamb.mnist.plan import RUNS_DIR, plan_runs, run_folder
from lamb.mnist.progress import Progress
from lamb.mnist.reports import write_reports
from lamb.mnist.results import (
    ACCURACY_PER_EPOCH_PNG,
    ACCURACY_VS_BATCH_SIZE_PNG,
    RESULTS_CSV,
    RESULTS_MD,
    read_results,
    write_results,
)
from lamb.mnist.training import load_data, train_and_evaluate


def run_sweep(config, verbose=0, log=functools.partial(print, flush=True)):
    """Runs every planned run not yet in `results.csv`; writes tables and plots.

    A sweep may be killed at any moment and repeated: a run counts as done
    once its row is in `results.csv`, which is rewritten whole to a
    temporary file and renamed over the old one after the run's folder is
    complete (the reports and plots are renamed into place too). The folder
    of a run killed before that is deleted and the run trained again from
    scratch, not resumed: Keras' weight backups leave out the dropout
    layers' random state and the position in the shuffled data stream, so
    a resumed run would end with other numbers than an uninterrupted one.
    A repeated sweep thus ends with the results of an uninterrupted one.
    One sweep at a time per `output_dir` (`run.lock`): a second one stops at
    once, naming the first. A run whose loss diverges is stopped there and
    marked diverged (`training.DivergenceGuard`); the sweep goes on. The
    last lines logged say how many runs diverged and where the results are.

    Args:
        config: A `SweepConfig`.
        verbose: `Model.fit` verbosity (0 silent, 2 one line per epoch).
        log: Where progress lines go.

    Returns:
        The sweep's result rows (dicts with `results.RESULT_FIELDS`), in plan order.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    with _files.folder_lock(config.output_dir, "output_dir"):
        return _run_sweep(config, verbose, log)


def _run_sweep(config, verbose, log):
    results_path = os.path.join(config.output_dir, RESULTS_CSV)
    runs = plan_runs(config)
    recorded = read_results(results_path)  # This sweep's rows and any other's.
    done = {row["run_id"]: row for row in recorded}
    progress = Progress(runs, done, log)
    data = None
    rows = []
    for index, spec in enumerate(runs):
        if spec.run_id in done:
            progress.skipped(index, spec)
            rows.append(done[spec.run_id])
            continue
        if data is None:
            data = load_data(config, log)
        progress.starting(index, spec)
        if os.path.exists(run_folder(config, spec)):
            log(
                f"  {run_folder(config, spec)} is left from an interrupted run (it has no row "
                f"in {RESULTS_CSV}): deleted, the run starts again from scratch"
            )
        started = time.monotonic()
        row = train_and_evaluate(spec, data, config, verbose=verbose, log=log)
        progress.finished(spec, time.monotonic() - started, row)
        recorded.append(row)
        write_results(results_path, recorded)
        rows.append(row)
        write_reports(config, rows)
    write_reports(config, rows)
    progress.summary(rows)
    if rows:
        log(_where_results_are(config.output_dir))
    return rows


def _where_results_are(output_dir):
    path = functools.partial(os.path.join, output_dir)
    return (
        f"Results: {path(RESULTS_MD)} (a table per batch size), {path(RESULTS_CSV)} (a row per "
        f"run); plots: {path(ACCURACY_VS_BATCH_SIZE_PNG)}, {path(ACCURACY_PER_EPOCH_PNG)}; "
        f"each run's logs: {path(RUNS_DIR)}{os.sep}."
    )
