"""The process-wide torch thread: one OpenMP team per process (see steerboard/torch_thread.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from steerboard import torch_thread


def test_call_runs_on_one_thread_and_nests_inline() -> None:
    def inner() -> str:
        return threading.current_thread().name

    def outer() -> tuple[str, str]:
        # a nested call from the torch thread runs inline instead of deadlocking on the queue
        return threading.current_thread().name, torch_thread.call(inner)

    first, nested = torch_thread.call(outer)
    assert first == nested == "steerboard-torch"
    assert torch_thread.call(inner) == first
    assert not torch_thread.on_torch_thread()


def test_exceptions_reach_the_caller() -> None:
    def boom() -> None:
        raise ValueError("bad input x")

    with pytest.raises(ValueError, match="bad input x"):
        torch_thread.call(boom)
    with pytest.raises(ValueError, match="bad input x"):
        asyncio.run(torch_thread.acall(boom))


def test_inline_jobs_run_between_steps_of_a_long_job() -> None:
    started = threading.Event()
    order: list[str] = []

    def long_job() -> int:
        started.set()
        ran = 0
        for _ in range(200):  # a decode loop: polls for short jobs between steps
            ran += torch_thread.run_inline_jobs()
            if order:
                break
            time.sleep(0.005)
        order.append("long done")
        return ran

    fut = torch_thread.submit(long_job)
    assert started.wait(5)
    assert torch_thread.call(lambda: order.append("judge") or 7, inline=True) == 7
    assert fut.result(5) == 1
    assert order == ["judge", "long done"]  # the short job did not wait for the long one


def test_non_inline_jobs_wait_their_turn() -> None:
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def long_job() -> None:
        started.set()
        for _ in range(100):
            torch_thread.run_inline_jobs()
            if release.wait(0.01):
                break
        order.append("long")

    fut = torch_thread.submit(long_job)
    assert started.wait(5)
    second = torch_thread.submit(lambda: order.append("queued"))
    time.sleep(0.1)
    assert order == []  # not run inside the long job
    release.set()
    fut.result(5)
    second.result(5)
    assert order == ["long", "queued"]


def test_acall_does_not_block_the_event_loop() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def ticker() -> None:
            for _ in range(5):
                seen.append("tick")
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        await torch_thread.acall(time.sleep, 0.1)
        seen.append("done")
        await t
        return seen

    seen = asyncio.run(main())
    assert seen.index("done") > 1  # ticks happened while the torch thread slept


def test_provider_generation_and_judging_run_on_the_torch_thread(tiny_model_dir: str) -> None:
    from inspect_ai.model import GenerateConfig, get_model

    from steerboard.scorers.embed import MicroBatcher

    model = get_model(f"base/{tiny_model_dir}")
    seen: set[str] = set()
    # a decoder block: generation may run the decoder and the output head apart, never bypassing the blocks
    block = model.api.engine.decoder_layers()[0]
    handle = block.register_forward_hook(lambda *_: seen.add(threading.current_thread().name))
    try:
        asyncio.run(model.generate("Hello", config=GenerateConfig(max_tokens=3)))
    finally:
        handle.remove()
    assert seen == {"steerboard-torch"}
    batcher = MicroBatcher(lambda items: [threading.current_thread().name for _ in items])
    assert asyncio.run(batcher.submit(["a", "b"])) == ["steerboard-torch"] * 2


def test_cli_runs_commands_on_the_torch_thread_except_inspect_drivers(monkeypatch) -> None:
    from steerboard import cli

    parser = cli.build_parser()
    assert parser.parse_args(["run", "--suite", "quick"]).torch_thread is False
    seen: list[str] = []
    from steerboard import models_cli

    monkeypatch.setattr(models_cli, "_aliases", lambda _a: seen.append(threading.current_thread().name))
    assert cli.main(["model", "aliases"]) == 0
    assert seen == ["steerboard-torch"]
