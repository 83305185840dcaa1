"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process.

The tests marked ``distributed`` launch torchrun: the library's pretrain(), the CLI's
finetune and anomaly fit on one machine, and pretrain on two simulated machines.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aelab.data import ImageDataset
from aelab.models import create_model
from aelab.training import PretrainConfig, load_model, pretrain
from aelab.training import distributed as dist_utils
from aelab.training.checkpoint import load_weights
from aelab.training.loop import Trainer
from noise import TOLERANCES, near

SRC = Path(__file__).resolve().parents[1] / "src"
STANDALONE_2 = ["--standalone", "--nproc-per-node", "2"]
runner = CliRunner()

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


# Put on PYTHONPATH, this records what each torchrun worker creates, writes, renames or
# removes under AELAB_TEST_WRITES_UNDER, into AELAB_TEST_WRITES_LOG/rank<RANK>.txt at exit:
# the files tell which rank wrote what, which the files themselves cannot.
WRITE_AUDIT = textwrap.dedent(
    """
    import atexit, os, sys

    _rank, _root, _log = (os.environ.get(k) for k in
                          ("RANK", "AELAB_TEST_WRITES_UNDER", "AELAB_TEST_WRITES_LOG"))
    if _rank is not None and _root and _log:
        _seen = set()
        _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _hook(event, args):
            if _log in _seen:  # the log itself is being written
                return
            if event == "open" and isinstance(args[2], int) and args[2] & _WRITE:
                path = args[0]
            elif event in ("os.mkdir", "os.remove", "os.rmdir"):
                path = args[0]
            elif event == "os.rename":
                path = args[1]
            else:
                return
            if isinstance(path, (str, bytes, os.PathLike)):
                p = os.path.abspath(os.fsdecode(path))
                if p.startswith(_root):
                    _seen.add(event + " " + p)

        sys.addaudithook(_hook)

        @atexit.register
        def _dump():
            lines = sorted(_seen)
            _seen.add(_log)
            with open(os.path.join(_log, "rank" + _rank + ".txt"), "w") as f:
                f.write("\\n".join(lines))
    """
)


def _torchrun_env(audit: Path | None = None, under: Path | None = None) -> dict[str, str]:
    """This environment without a launcher's variables, one thread per process; with
    ``audit``, the workers' writes under ``under`` are logged there (see WRITE_AUDIT)."""
    path = [str(SRC)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if audit is not None:
        (audit / "site").mkdir(parents=True, exist_ok=True)
        (audit / "site" / "sitecustomize.py").write_text(WRITE_AUDIT)
        path.insert(0, str(audit / "site"))
        env.update(AELAB_TEST_WRITES_UNDER=str(under), AELAB_TEST_WRITES_LOG=str(audit))
    env["PYTHONPATH"] = os.pathsep.join(path)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
              "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):  # fmt: skip
        env.pop(k, None)
    return env


def _torchrun(
    launch: list[str], command: list[object], cwd: Path, audit: Path | None = None
) -> subprocess.Popen:
    """``python -m torch.distributed.run LAUNCH -m aelab COMMAND`` in ``cwd``, writes
    under ``cwd`` logged into ``audit``. Output goes to temporary files, not pipes, so
    launches running side by side cannot block each other on a full pipe."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "aelab",
           *map(str, command)]  # fmt: skip
    logs = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_torchrun_env(audit, cwd), stdout=logs[0], stderr=logs[1], text=True
    )
    proc.logs = logs  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a launch; its stdout (the failure's output when it did not exit 0)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out, err = proc.logs  # type: ignore[attr-defined]
    out.seek(0), err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close(), err.close()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def _writes(audit: Path, ranks: int = 2) -> list[list[str]]:
    """What each rank wrote, as logged by WRITE_AUDIT."""
    return [(audit / f"rank{r}.txt").read_text().splitlines() for r in range(ranks)]


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _assert_weights_close(got: Path, want: Path, skip: set[str], tol: str = "weights") -> None:
    """Every weight but the batch-norm-cancelled ones (see bias_free_names) equal to tolerance."""
    g, _ = load_weights(got)
    w, _ = load_weights(want)
    assert set(g) == set(w)
    for k in sorted(set(w) - skip):
        if w[k].is_floating_point():
            near(f"{tol}:{k}", g[k], w[k], tol)
        else:
            assert torch.equal(g[k], w[k]), k


def _metrics(path: Path) -> list[dict[str, float]]:
    import csv

    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(path.open())]


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


@pytest.mark.distributed
@pytest.mark.numerics
@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    # One process, uninterrupted: the reference.
    ref_model, ref = one_process(tmp_path / "one")
    # One process interrupted after epoch 1, to be resumed by two processes.
    assert one_process(tmp_path / "resumed", stop_after=1) == (None, None)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = _torchrun_env()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(script), str(tmp_path / "two"), str(tmp_path / "resumed"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1 of 2 (gloo) done" in proc.stdout

    skip = bias_free_names(ref_model)
    assert "encoder.0.0.bias" in skip and "encoder.0.0.weight" not in skip
    x = squares(8, 3).images.float() / 255
    ref_model, _ = load_model(tmp_path / "one", which="last")
    for run in ("two", "resumed"):
        _assert_weights_close(
            tmp_path / run / "model.safetensors", tmp_path / "one" / "model.safetensors", skip
        )
        # The checkpoint of two processes loads in one process and computes what the
        # reference computes with batch statistics (where the cancelled biases drop out).
        model, meta = load_model(tmp_path / run, which="last")
        assert meta["model"] == "convae_tiny"
        assert torch.isfinite(model.encode(x)).all()
        model.train(), ref_model.train()
        with torch.no_grad():
            near("decode", model.decode(model.encode(x)), ref_model.decode(ref_model.encode(x)),
                 "outputs")  # fmt: skip
    rows = _metrics(tmp_path / "two" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r, h in zip(rows, ref.history, strict=True):
        near("train_loss", r["train_loss"], h["train_loss"], "train_loss")
        # Validation runs on running statistics, which carry the cancelled biases' noise.
        near("val_loss", r["val_loss"], h["val_loss"], "val_loss")
    # Only rank 0 wrote: no stray files from rank 1.
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


# ----------------------------------------------------------------------------- the CLI under torchrun


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """Tiny labeled shapes (.npz) and an untrained convae_tiny checkpoint to fine-tune."""
    from aelab.training import save_checkpoint
    from conftest import make_shapes

    tmp = tmp_path_factory.mktemp("ddp_cli")
    images, labels, names = make_shapes(120)
    np.savez(tmp / "d.npz", images=images, labels=labels, class_names=np.array(names))
    torch.manual_seed(0)
    save_checkpoint(tmp / "init", create_model("convae_tiny"), model_name="convae_tiny")
    return tmp


@pytest.mark.distributed
@pytest.mark.numerics
@pytest.mark.slow
def test_finetune_and_anomaly_fit_cli_under_torchrun(shapes_run, tmp_path):
    from aelab.anomaly import ReconstructionDetector
    from aelab.cli.main import app

    tmp = shapes_run
    plain = ["finetune", "d.npz", "--init", "init", "--recipe", "plain", "--augment", "none",
             "--epochs", "3", "--batch-size", "16", "--labels-per-class", "20",
             "--val-per-class", "8", "--device", "cpu"]  # fmt: skip
    # FixMatch with weight averaging: the average is taken next to DDP and sync batch norm.
    fixmatch = ["finetune", "d.npz", "--init", "init", "--epochs", "1", "--batch-size", "8",
                "--labels-per-class", "20", "--val-per-class", "8", "--device", "cpu",
                "--ema-decay", "0.9", "--set", "min_epoch_steps=0"]  # fmt: skip
    anomaly = ["anomaly", "fit", "d.npz", "--normal-class", "square", "--model", "convae_tiny",
               "--epochs", "2", "--batch-size", "8", "--score", "mse+latent", "--device", "cpu",
               # two epochs as asked: the default floor of 600 steps would let float noise
               # between one and two processes grow past the tolerance
               "--set", "min_steps=0",
               # 4 of the 40 squares calibrate, as before the conformal threshold: fpr:0.05
               # would hold out 19, and on 21 training images the same noise grows past it
               "--threshold", "fpr:0.25"]  # fmt: skip
    # Two processes each, one launch after the other (the machine may have two cores).
    two = {}
    for name, args in (("plain", plain), ("fixmatch", fixmatch), ("anomaly", anomaly)):
        audit = tmp_path / name
        out = _finish(_torchrun(STANDALONE_2, [*args, "--out", f"{name}2"], tmp, audit))
        assert out.count("wrote ") == 1, out  # rank 0 alone prints
        two[name] = tmp / f"{name}2"
        # Rank 0 wrote the run (through temporary files renamed into place); rank 1 nothing.
        rank0, rank1 = _writes(audit)
        assert f"os.rename {two[name]}/" in "\n".join(rank0) and rank1 == [], (name, rank1)
    # The references: the same commands in one process.
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        for name, args in (("plain", plain), ("anomaly", anomaly)):
            r = runner.invoke(app, [*args, "--out", f"{name}1"])
            assert r.exit_code == 0, r.output
    finally:
        os.chdir(cwd)

    # Only rank 0 wrote: the files of one process, no more.
    assert _files(two["plain"]) == _files(tmp / "plain1")
    averaged = sorted([*_files(tmp / "plain1"), "finetune/train_weights.safetensors"])
    assert _files(two["fixmatch"]) == averaged
    assert _files(two["anomaly"]) == _files(tmp / "anomaly1")

    # Plain fine-tuning with the same global batch matches one process.
    skip = bias_free_names(create_model("convae_tiny"))
    ft1, ft2 = tmp / "plain1" / "finetune", two["plain"] / "finetune"
    _assert_weights_close(ft2 / "model.safetensors", ft1 / "model.safetensors", skip)
    rows1, rows2 = _metrics(ft1 / "metrics.csv"), _metrics(ft2 / "metrics.csv")
    assert [r["epoch"] for r in rows2] == [1, 2, 3]
    for r2, r1 in zip(rows2, rows1, strict=True):
        near("train_loss", r2["train_loss"], r1["train_loss"], "train_loss")
        assert r2["train_acc"] == r1["train_acc"]
        # Validation runs on running statistics, which carry the cancelled biases' noise.
        near("val_loss", r2["val_loss"], r1["val_loss"], "val_loss")
        assert r2["val_acc"] == pytest.approx(r1["val_acc"], abs=1 / 24 + 1e-9)  # <= 1 image

    # Checkpoints of two processes load and predict in one process.
    x = torch.from_numpy(np.load(tmp / "d.npz")["images"][:12, None])
    for run in (ft2, two["fixmatch"] / "finetune"):
        model, meta = load_model(run)
        assert meta["model"] == "convae_tiny" and meta["class_names"] == ["hbar", "vbar", "square"]
        with torch.no_grad():
            assert torch.isfinite(model.classify(model.encode(x.float() / 255))).all()
    fm = _metrics(two["fixmatch"] / "finetune" / "metrics.csv")
    assert len(fm) == 1 and np.isfinite(fm[0]["train_loss"]) and 0 <= fm[0]["train_mask"] <= 1

    # The detector of two processes: the same weights, threshold and scores as one process.
    _assert_weights_close(two["anomaly"] / "model" / "model.safetensors",
                          tmp / "anomaly1" / "model" / "model.safetensors", skip)  # fmt: skip
    d1 = ReconstructionDetector.load(tmp / "anomaly1")
    d2 = ReconstructionDetector.load(two["anomaly"])
    near("threshold", d2.threshold_, d1.threshold_, "threshold")
    s1, s2 = d1.decision_function(x.numpy()[:, 0]), d2.decision_function(x.numpy()[:, 0])
    near("scores", s2, s1, "scores")
    # What is invariant: where a score is clearly on one side of the threshold in both
    # detectors, both flag the image alike.
    atol = TOLERANCES["scores"].atol
    clear = (np.abs(s1 - d1.threshold_) > 2 * atol) & (np.abs(s2 - d2.threshold_) > 2 * atol)
    assert clear.any(), (s1, d1.threshold_)  # else the check below would hold vacuously
    assert np.array_equal((s1 > d1.threshold_)[clear], (s2 > d2.threshold_)[clear])


@pytest.mark.distributed
@pytest.mark.numerics
@pytest.mark.slow
def test_pretrain_cli_on_two_simulated_machines(shapes_run, tmp_path):
    """Two torchrun launches as two nodes of one process each, on a shared --out folder."""
    import socket

    from aelab.cli.main import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = shapes_run / "d.npz"
    args = ["pretrain", data, "--out", tmp_path / "nodes", "--model", "convae_tiny",
            "--epochs", "2", "--batch-size", "16", "--val-fraction", "0.1", "--device", "cpu"]  # fmt: skip
    audit = tmp_path / "audit"
    nodes = [
        _torchrun(["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                   "--master-addr", "127.0.0.1", "--master-port", str(port)], args, tmp_path,
                  audit)
        for rank in (0, 1)
    ]  # fmt: skip
    outs = [_finish(p) for p in nodes]
    assert "wrote" in outs[0] and "wrote" not in outs[1]  # global rank 0 is on node 0
    rank0, rank1 = _writes(audit)
    assert len(rank0) > 5 and rank1 == []  # the second machine wrote nothing
    one = [str(a) for a in args]
    one[one.index(str(tmp_path / "nodes"))] = str(tmp_path / "one")
    r = runner.invoke(app, one)
    assert r.exit_code == 0, r.output

    # One set of files in the shared folder: those of one process.
    assert _files(tmp_path / "nodes") == _files(tmp_path / "one")
    got, want = tmp_path / "nodes" / "pretrain", tmp_path / "one" / "pretrain"
    _assert_weights_close(got / "model.safetensors", want / "model.safetensors",
                          bias_free_names(create_model("convae_tiny")))  # fmt: skip
    for r2, r1 in zip(_metrics(got / "metrics.csv"), _metrics(want / "metrics.csv"), strict=True):
        near("train_loss", r2["train_loss"], r1["train_loss"], "train_loss")
        near("val_loss", r2["val_loss"], r1["val_loss"], "val_loss")
    model, meta = load_model(got)
    assert meta["model"] == "convae_tiny"
