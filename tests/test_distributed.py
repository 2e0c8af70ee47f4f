"""gv3lite.distributed without a process group (tests/test_ddp.py runs two processes): every rank's shard of the val
set together holds each image exactly once, and the reductions leave their input unchanged."""
import torch

from gv3lite.distributed import gather_shards, is_distributed, sum_over_processes, val_shard, world_and_rank


def test_shards_cover_the_val_set_once_and_one_process_changes_nothing(monkeypatch):
    data = list(range(11))
    shards = [list(val_shard(data, 3, rank)) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(sum(shards, [])) == data and val_shard(data, 1, 0) is data
    assert not is_distributed()
    assert sum_over_processes([1.0, 2.0], "cpu") == [1.0, 2.0]
    values = torch.tensor([3, 1, 2])
    assert gather_shards(values) is values
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert world_and_rank() == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert world_and_rank() == (4, 2)
