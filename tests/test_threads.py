"""``gv3lite.utils.set_torch_threads``: the notebooks' kernels pin torch's thread count (OMP_NUM_THREADS, else half the
cores) and bad values are refused with the fix."""
import pytest
import torch

from gv3lite.utils import set_torch_threads


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_and_env_and_default(monkeypatch):
    assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_torch_threads() == 2 and torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert set_torch_threads() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert set_torch_threads() == 1


@pytest.mark.parametrize("env", ["0", "two", "-1"])
def test_bad_env_is_refused(monkeypatch, env):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        set_torch_threads()


def test_bad_count_is_refused():
    with pytest.raises(ValueError, match="below 1"):
        set_torch_threads(0)
