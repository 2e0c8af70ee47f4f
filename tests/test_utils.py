"""gv3lite.utils (and gv3lite.budgets.budget): the budget name from the environment, the user cache dir, seeding, devices, the git commit."""
import pytest
import torch

from gv3lite.budgets import budget
from gv3lite.utils import cache_dir, git_commit, resolve_device, seed_everything


def test_utils_budget_cache_dir_and_seeding(monkeypatch, tmp_path):
    monkeypatch.setenv("GV3LITE_BUDGET", "quick")
    assert budget() == "quick"
    monkeypatch.setenv("GV3LITE_BUDGET", "huge")
    with pytest.raises(ValueError, match="smoke"):
        budget()
    monkeypatch.setenv("GV3LITE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    g = seed_everything(5)
    a = (torch.rand(3), torch.randint(10, (3,), generator=g))
    g = seed_everything(5)
    assert torch.equal(a[0], torch.rand(3)) and torch.equal(a[1], torch.randint(10, (3,), generator=g))
    assert resolve_device("cpu").type == "cpu" and isinstance(git_commit(), str)
    with pytest.raises(ValueError, match="unknown device 'gpu'; use 'cpu', 'cuda'.*'auto'"):
        resolve_device("gpu")
