"""Cost of the metrics sink per meta-iteration: the metrics log alone, and with the
TensorBoard sink (when installed). Prints microseconds per record; nothing is asserted.

    PYTHONPATH=src python3 bench/metrics_sink.py [--records 20000] [--flush-every 100]

A record is what the builder adds after each meta-iteration; a flush (append + fsync)
happens at each checkpoint, here every ``--flush-every`` records.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from metasuite.training.metrics import MetricsLog, iteration_record
from metasuite.training.tensorboard_sink import available, tensorboard_sink


def measure(folder: Path, records: int, flush_every: int, *, tensorboard: bool) -> float:
    sinks = []
    if tensorboard:
        sink = tensorboard_sink(folder / "tensorboard")
        sinks = [sink] if sink is not None else []
    log = MetricsLog(folder / "logs" / "metrics.jsonl", sinks)
    log.start(0, 0)
    metrics = {"loss": 1.2345678, "accuracy": 0.4, "learning_rate": 0.001}
    start = time.perf_counter()
    for it in range(1, records + 1):
        log.add(iteration_record(it // 500, it, metrics))
        if it % flush_every == 0:
            log.flush()
    log.close()
    return (time.perf_counter() - start) / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--flush-every", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        us = measure(Path(tmp) / "a", args.records, args.flush_every, tensorboard=False)
        print(f"metrics log only:        {us:7.1f} us per meta-iteration")
        if available():
            us = measure(Path(tmp) / "b", args.records, args.flush_every, tensorboard=True)
            print(f"metrics log + tensorboard: {us:5.1f} us per meta-iteration")
        else:
            print("tensorboard not installed: sink not measured")


if __name__ == "__main__":
    main()
