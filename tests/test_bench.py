"""The benchmark library runs end to end on a tiny size (its speed is not judged here)."""

from __future__ import annotations

from moldudp64 import bench


def test_quick_suite_delivers_every_message_and_prints_a_table() -> None:
    results = bench.run_quick_suite(scale=0.001)
    names = [r.name for r in results]
    assert names[0] == "core, in order"
    assert names[1].startswith("core, 5% loss")
    assert "client API, blocking for loop" in names
    assert "client API, asyncio async for" in names
    for result in results[:2]:
        assert result.notes["delivered"] == result.notes["messages"]
        assert result.notes["lost"] == 0
        assert result.value > 0
    assert int(str(results[1].notes["requests_sent"])) > 0
    lines: list[str] = []
    bench.print_table(results, title="t", write=lines.append)
    assert lines[0] == "# t"
    assert "cores" in lines[1]
    assert sum("messages/s" in line for line in lines) == len(results)


def test_generated_messages_are_distinct_and_sized() -> None:
    messages = list(bench.generate_messages(1000, 30))
    assert len(set(messages)) == 1000
    assert {len(m) for m in messages} == {30}
