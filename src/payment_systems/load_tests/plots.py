"""The two pictures a load test owes its reader: latency over time, and its distribution.

Over time shows what an average hides: a stall, a slow drift as a queue
builds, a garbage-collection sawtooth. The histogram (log scale) shows the
tail that p99 summarizes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from payment_systems.load_tests.payment_load import Samples


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def plot(samples: Samples, path: Path, title: str) -> Path:
    """Write a two-panel PNG: per-second p50/p99 over time, and the latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_second: dict[int, list[float]] = defaultdict(list)
    for at_s, ms, _status in samples.points:
        per_second[int(at_s)].append(ms)
    seconds = sorted(per_second)
    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(11, 3.6))
    over_time.plot(seconds, [_percentile(per_second[s], 0.5) for s in seconds], label="p50")
    over_time.plot(seconds, [_percentile(per_second[s], 0.99) for s in seconds], label="p99")
    over_time.set_xlabel("seconds into the run (by intended send time)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title("Latency over time")
    over_time.legend()
    over_time.grid(alpha=0.3)
    histogram.hist([ms for _, ms, _ in samples.points], bins=60, log=True)
    histogram.set_xlabel("latency (ms)")
    histogram.set_ylabel("requests (log)")
    histogram.set_title("Latency distribution")
    histogram.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
