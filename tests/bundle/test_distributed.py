from __future__ import annotations

import torch

from cellseg_monai.bundle import (
    ddp_device_ids,
    distributed_device,
    finalize_distributed,
    init_distributed,
    is_not_rank0,
)


def test_single_process_group_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29561")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_device() == torch.device("cpu")
    assert ddp_device_ids(torch.device("cpu")) is None
    assert not is_not_rank0()
    init_distributed()
    try:
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_backend() == "gloo"
        assert not is_not_rank0()  # rank 0 of a group
        init_distributed()  # joining twice is harmless
    finally:
        finalize_distributed()
    assert not torch.distributed.is_initialized()
    finalize_distributed()  # leaving twice is harmless


def test_gpu_device_follows_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed_device() == torch.device("cuda:3")
    assert ddp_device_ids(torch.device("cuda:3")) == [torch.device("cuda:3")]
