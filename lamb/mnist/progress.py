"""The sweep's progress lines: which run of how many, and the time left."""

import time


class Progress:
    """Prints which run of how many is going, and an estimate of the time left.

    A run is estimated at the seconds per example of the finished runs (this
    sweep's and those of `results.csv`, but diverged ones, which stopped
    early) most like it: same model, batch size and optimizer, else same
    model and batch size, same model and optimizer, same model, else any.
    """

    def __init__(self, runs, done, log):
        self.runs = runs
        self.log = log
        self.started = time.monotonic()
        self.remaining = [spec for spec in runs if spec.run_id not in done]
        self.finished_runs = [  # (spec, seconds per example)
            (spec, done[spec.run_id]["train_seconds"] / _examples(spec))
            for spec in runs
            if spec.run_id in done and done[spec.run_id]["diverged_at_step"] is None
        ]
        self.trained = 0

    def skipped(self, index, spec):
        self.log(f"[{index + 1}/{len(self.runs)}] {_describe(spec)}: done before, skipped")

    def starting(self, index, spec):
        self.log(
            f"[{index + 1}/{len(self.runs)}] {_describe(spec)} — elapsed "
            f"{_duration(time.monotonic() - self.started)}, {self._time_left()}"
        )

    def finished(self, spec, seconds, row):
        self.remaining.remove(spec)
        if row["diverged_at_step"] is None:
            self.finished_runs.append((spec, seconds / _examples(spec)))
        self.trained += 1

    def summary(self, rows):
        diverged = [row for row in rows if row["diverged_at_step"] is not None]
        described = "; ".join(
            f"{row['optimizer']} on {row['model']}, batch {row['batch_size']}" for row in diverged
        )
        self.log(
            f"Sweep done: {self.trained} run(s) trained, {len(self.runs) - self.trained} skipped, "
            f"in {_duration(time.monotonic() - self.started)}"
            + (f"; {len(diverged)} diverged ({described})." if diverged else ".")
        )

    def _time_left(self):
        if not self.finished_runs:
            return "time left unknown until a run finishes"
        left = sum(_examples(spec) * self._seconds_per_example(spec) for spec in self.remaining)
        return f"about {_duration(left)} left"

    def _seconds_per_example(self, spec):
        for key in (
            ("model", "batch_size", "optimizer"),
            ("model", "batch_size"),
            ("model", "optimizer"),
            ("model",),
            (),
        ):
            similar = [
                rate
                for done, rate in self.finished_runs
                if all(getattr(done, k) == getattr(spec, k) for k in key)
            ]
            if similar:
                return sum(similar) / len(similar)


def _examples(spec):
    return spec.epochs * spec.steps_per_epoch * spec.batch_size


def _describe(spec):
    return (
        f"{spec.optimizer} on {spec.model}, batch {spec.batch_size}, "
        f"{spec.epochs} epochs, lr {spec.learning_rate:.3g}"
    )


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
