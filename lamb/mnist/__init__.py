"""The MNIST optimizer comparison as library functions (used by the
`lamb.mnist_compare` app and `notebooks/mnist_tensorflow.ipynb`).

Each module imports only those listed before it:

- `protocols`: the protocols' settings, and the names tables and plots show.
- `settings`: `SETTINGS`, the sweep's settings (and the app's flags) with defaults and help.
- `parsing`: how a setting's value is read (lists, `name=value` pairs, optimizer options).
- `config`: `make_config`, which checks a sweep's settings into a `SweepConfig`.
- `plan`: the sweep's runs (`RunSpec`, `plan_runs`), each run's optimizer and folder.
- `results`: the output folder's files: `results.csv`, the per-epoch logs, atomic writes.
- `training`: one run: its data, its training from scratch, its result row.
- `reports`: `results.md`, the accuracy plots and the findings (`describe_findings`).
- `progress`: the progress lines, with an estimate of the time left.
- `sweep`: `run_sweep`, the whole sweep, resumable after a kill at any moment.

See `lamb.mnist_compare` for the protocols and outputs.
"""
