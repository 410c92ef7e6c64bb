"""Progress lines for the long steps of writing records."""

import time

from absl import logging


class Progress:
    """Logs how far a long step is: done of total, the rate and the time left,
    at most every `interval` seconds, and a last line from `finish`."""

    def __init__(self, what, total, unit="", scale=1, interval=10.0):
        self.what, self.total, self.unit, self.scale = what, total, unit, scale
        self.interval = interval
        self.done = 0
        self.start = self.last = time.monotonic()

    def _amount(self, count):
        return f"{count / self.scale:,.1f}{self.unit}" if self.scale != 1 else f"{count:,.0f}{self.unit}"

    def add(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.start)
            logging.info(
                "%s: %s of %s (%s/s), about %.0f s left", self.what, self._amount(self.done),
                self._amount(self.total), self._amount(rate), (self.total - self.done) / rate,
            )

    def finish(self):
        seconds = max(time.monotonic() - self.start, 1e-9)
        logging.info(
            "%s: %s in %.1f s (%s/s)", self.what, self._amount(self.done), seconds,
            self._amount(self.done / seconds),
        )
