"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch

from aelab.data import ImageDataset
from aelab.models import create_model
from aelab.training import PretrainConfig, load_model, pretrain
from aelab.training import distributed as dist_utils
from aelab.training.checkpoint import load_weights
from aelab.training.loop import Trainer

SRC = Path(__file__).resolve().parents[1] / "src"

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from aelab.data import ImageDataset
    from aelab.models import create_model
    from aelab.training import PretrainConfig, pretrain
    from aelab.training import distributed as dist_utils

    def squares(n, seed):
        g = torch.Generator().manual_seed(seed)
        images = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
        for i in range(n):
            s = int(torch.randint(4, 8, (1,), generator=g))
            r, c = torch.randint(0, 16 - s, (2,), generator=g).tolist()
            images[i, 0, r : r + s, c : c + s] = 255
        return ImageDataset(images, None, [str(i) for i in range(n)])

    fresh, resumed = sys.argv[1], sys.argv[2]
    config = PretrainConfig(epochs=2, batch_size=16, lr=3e-3, device="cpu", progress=False)
    for out, resume in ((fresh, False), (resumed, True)):
        torch.manual_seed(0)
        model = create_model("convae_tiny")
        pretrain(model, squares(64, 0), val=squares(10, 1), config=config, out_dir=out,
                 resume=resume, model_name="convae_tiny")
    info = dist_utils.info()
    print(f"rank {info.rank} of {info.world_size} ({info.backend}) done", flush=True)
    """
)


def squares(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    for i in range(n):
        s = int(torch.randint(4, 8, (1,), generator=g))
        r, c = torch.randint(0, 16 - s, (2,), generator=g).tolist()
        images[i, 0, r : r + s, c : c + s] = 255
    return ImageDataset(images, None, [str(i) for i in range(n)])


def one_process(out: Path | None, *, stop_after: int | None = None):
    torch.manual_seed(0)
    model = create_model("convae_tiny")
    config = PretrainConfig(epochs=2, batch_size=16, lr=3e-3, device="cpu", progress=False)
    save = Trainer._save

    def save_then_stop(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if stop_after is not None and self.epoch + 1 >= stop_after:
            raise KeyboardInterrupt("simulated interruption")

    with mock.patch.object(Trainer, "_save", save_then_stop):
        try:
            result = pretrain(
                model, squares(64, 0), val=squares(10, 1), config=config, out_dir=out,
                model_name="convae_tiny",
            )  # fmt: skip
        except KeyboardInterrupt:
            return None, None
    return model, result


def bias_free_names(model: torch.nn.Module) -> set[str]:
    """Biases right before a batch norm, and that norm's running mean.

    Batch norm cancels such a bias, so its true gradient is zero and AdamW turns
    rounding noise into full-size steps: it differs between any two
    implementations and is no evidence either way (and so is the running mean
    that carries it).
    """
    names = set()
    for prefix, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (a, m), (b, nxt) in zip(kids, kids[1:], strict=False):
            if (
                isinstance(nxt, torch.nn.modules.batchnorm._BatchNorm)
                and getattr(m, "bias", None) is not None
            ):
                p = f"{prefix}." if prefix else ""
                names |= {f"{p}{a}.bias", f"{p}{b}.running_mean"}
    return names


def test_shard_order_partitions_each_global_batch():
    order = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    parts = [
        dist_utils.shard_order(order, 8, drop_last=False, rank=r, world_size=4)[0] for r in range(4)
    ]
    # global batch j = order[8j : 8j + 8]; each rank holds 2 of it, in order
    for j in range(4):
        got = torch.cat([p[2 * j : 2 * j + 2] for p in parts])
        assert torch.equal(got, order[8 * j : 8 * j + 8])
    assert sorted(torch.cat([p[8:] for p in parts]).tolist()) == sorted(order[32:].tolist())
    dropped = dist_utils.shard_order(order, 8, drop_last=True, rank=1, world_size=4)[0]
    assert dropped.numel() == 8
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        dist_utils.shard_order(order, 8, drop_last=True, rank=0, world_size=3)
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        dist_utils.shard_order(order[:34], 8, drop_last=False, rank=0, world_size=4)


def test_single_process_is_untouched():
    info = dist_utils.init_from_env("cpu")
    assert (info.world_size, info.rank, info.backend) == (1, 0, "none")
    assert dist_utils.is_main() and not dist_utils.is_distributed()


def test_sync_batchnorm_round_trip_keeps_state():
    torch.manual_seed(0)
    model = create_model("convae_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dist_utils.convert_sync_batchnorm(model, torch.device("cpu"))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNormCPU" in kinds and "BatchNorm2d" not in kinds
    assert list(model.state_dict()) == list(before)
    x = torch.rand(4, 1, 16, 16)
    model.train()
    y_sync = model.decode(model.encode(x))  # one process: plain batch norm
    dist_utils.revert_sync_batchnorm(model)
    assert "SyncBatchNormCPU" not in {type(m).__name__ for m in model.modules()}
    model.load_state_dict(before)
    y_plain = model.decode(model.encode(x))
    torch.testing.assert_close(y_sync, y_plain)


def test_two_processes_match_one(tmp_path):
    # One process, uninterrupted: the reference.
    ref_model, ref = one_process(tmp_path / "one")
    # One process interrupted after epoch 1, to be resumed by two processes.
    assert one_process(tmp_path / "resumed", stop_after=1) == (None, None)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(script), str(tmp_path / "two"), str(tmp_path / "resumed"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1 of 2 (gloo) done" in proc.stdout

    want, _ = load_weights(tmp_path / "one" / "model.safetensors")
    skip = bias_free_names(ref_model)
    assert "encoder.0.0.bias" in skip and "encoder.0.0.weight" not in skip
    x = squares(8, 3).images.float() / 255
    ref_model, _ = load_model(tmp_path / "one", which="last")
    for run in ("two", "resumed"):
        got, _ = load_weights(tmp_path / run / "model.safetensors")
        assert set(got) == set(want)
        for k in sorted(set(want) - skip):
            if want[k].is_floating_point():
                torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
            else:
                assert torch.equal(got[k], want[k]), k
        # The checkpoint of two processes loads in one process and computes what the
        # reference computes with batch statistics (where the cancelled biases drop out).
        model, meta = load_model(tmp_path / run, which="last")
        assert meta["model"] == "convae_tiny"
        assert torch.isfinite(model.encode(x)).all()
        model.train(), ref_model.train()
        with torch.no_grad():
            torch.testing.assert_close(
                model.decode(model.encode(x)), ref_model.decode(ref_model.encode(x)),
                rtol=1e-4, atol=1e-5,
            )  # fmt: skip
    import csv

    rows = list(csv.DictReader((tmp_path / "two" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, h in zip(rows, ref.history, strict=True):
        assert float(r["train_loss"]) == pytest.approx(h["train_loss"], rel=1e-5)
        # Validation runs on running statistics, which carry the cancelled biases' noise.
        assert float(r["val_loss"]) == pytest.approx(h["val_loss"], rel=2e-3)
    # Only rank 0 wrote: no stray files from rank 1.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
