"""A PyTorch model as an fpipe descriptor: training through a pipeline against a loop.

fpipe does not care what a model is; here it is a ``torch.nn.Module`` with its
optimizer, built by a static ``@model`` factory and trained by a locked action. Both
sides train the same MLP (784 -> 512 -> 10, SGD) on the same batches (ids from one
fpipe batching plan) in one process, on CUDA when available, else on the CPU. A GPU
step takes well under a millisecond, so this is where framework overhead would show.

- ``loop``: ``for ids in batches: step(x[ids], y[ids])``;
- ``fpipe``: ``Pipeline().init_model("torch_mlp").train_step()``, with ``prefetch=0``
  and ``prefetch=2`` (batches are cut on a worker thread while the driver trains);
- ``loop over fpipe batches``: ``for b in dataset.gen_batch(...): step(b.x, b.y)``, which
  tells the cost of making batches apart from that of dispatching the action.

Each side is warmed up, then the sides take turns ``--repeat`` times in rotating order
(see ``_sides.py``): best-round steps/s, and the ratio to the loop (1.0 means no
overhead) from the best rounds and as the median of the per-round ratios.
Needs PyTorch, which fpipe does not install; without it the script says so and exits.

    python benchmarks/bench_torch.py [--steps 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
from _sides import report, take_turns

from fpipe import Batch, Dataset, Pipeline, action, model

N_ITEMS, N_FEATURES, N_CLASSES, BATCH = 60_000, 784, 10, 256


def make_net(device: str, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 512), torch.nn.ReLU(), torch.nn.Linear(512, N_CLASSES)
    ).to(device)
    return {"net": net, "opt": torch.optim.SGD(net.parameters(), lr=0.01), "device": device}


def train(spec, x: np.ndarray, y: np.ndarray) -> None:
    import torch

    device = spec["device"]
    xb = torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)
    yb = torch.from_numpy(np.ascontiguousarray(y)).to(device, non_blocking=True)
    spec["opt"].zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(spec["net"](xb), yb)
    loss.backward()
    spec["opt"].step()


class TorchRows(Batch):
    components = ("x", "y")

    @model(mode="static")
    def torch_mlp(pipeline, config):
        return make_net(config["device"], config.get("seed", 0))

    @action(model="torch_mlp", use_lock="torch_mlp")
    def train_step(self, spec):
        train(spec, self.x, self.y)
        return self


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def loop(spec, x, y, batches) -> None:
    for ids in batches:
        train(spec, x[ids], y[ids])
    sync(spec["device"])


def over_batches(spec, ds: Dataset, steps: int) -> None:
    for b in ds.gen_batch(BATCH, shuffle=3, n_iters=steps):
        train(spec, b.x, b.y)
    sync(spec["device"])


def through_fpipe(pipeline: Pipeline, steps: int, prefetch: int, device: str) -> None:
    for _ in pipeline.gen_batch(BATCH, shuffle=3, n_iters=steps, prefetch=prefetch):
        pass
    sync(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("bench_torch: PyTorch is not installed; nothing to measure")
        sys.exit(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # batches are read-only; torch warns that it cannot protect them (nothing writes here)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ITEMS, N_FEATURES)).astype("float32")
    y = (x[:, :N_CLASSES] * 3 + rng.normal(size=(N_ITEMS, N_CLASSES))).argmax(axis=1)
    ds = Dataset(N_ITEMS, TorchRows, preloaded=(x, y))
    batches = [b.indices for b in ds.p.gen_batch(BATCH, shuffle=3, n_iters=args.steps)]

    spec = make_net(device)
    pipeline = Pipeline({"torch_mlp": {"device": device}}).init_model("torch_mlp").train_step()
    pipeline = pipeline << ds

    loop(spec, x, y, batches[:50])
    through_fpipe(pipeline, 50, 0, device)
    through_fpipe(pipeline, 50, 2, device)

    sides = {
        "loop": lambda: loop(spec, x, y, batches),
        "loop over fpipe batches": lambda: over_batches(spec, ds, args.steps),
        "fpipe": lambda: through_fpipe(pipeline, args.steps, 0, device),
        "fpipe prefetch=2": lambda: through_fpipe(pipeline, args.steps, 2, device),
    }
    times = take_turns(sides, args.repeat)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(
        f"torch MLP {N_FEATURES}-512-{N_CLASSES} on {name}, batches of {BATCH}, "
        f"{args.steps} steps, {args.repeat} rounds"
    )
    report(times, args.steps)


if __name__ == "__main__":
    main()
