"""PIPELINE_CPUS: which CPUs the pipeline process gets and which stay to serve."""

from __future__ import annotations

import pytest

from gpu_worker.cpu_pinning import CpuSplit, parse_cpu_list, split_cpus


def test_cpu_lists_use_the_taskset_notation() -> None:
    assert parse_cpu_list("0-2,5") == {0, 1, 2, 5}
    assert parse_cpu_list("3") == {3}
    with pytest.raises(ValueError):
        parse_cpu_list("4-2")
    with pytest.raises(ValueError):
        parse_cpu_list(",")


def test_auto_gives_the_pipeline_all_cpus_but_the_last() -> None:
    assert split_cpus("auto", {0, 1, 2, 3}) == CpuSplit(pipeline=(0, 1, 2), serving=(3,))
    assert split_cpus("auto", {4, 6}) == CpuSplit(pipeline=(4,), serving=(6,))
    assert split_cpus("auto", {0}) is None  # one CPU: nothing to split


def test_a_list_names_the_pipelines_cpus_and_the_rest_serve() -> None:
    assert split_cpus("0-1", {0, 1, 2, 3}) == CpuSplit(pipeline=(0, 1), serving=(2, 3))
    assert split_cpus("0-3", {0, 1, 2, 3}) == CpuSplit(pipeline=(0, 1, 2, 3), serving=())


def test_cpus_this_process_may_not_use_are_refused() -> None:
    with pytest.raises(ValueError, match="may not use"):
        split_cpus("0-7", {0, 1})
