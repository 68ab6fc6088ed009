"""The bookkeeping of holes in the log, independent of any database."""

from __future__ import annotations

from pupsourcing_async._holes import HoleTracker


def never(fence: int) -> bool:
    return False


def always(fence: int) -> bool:
    return True


def test_contiguous_positions_are_all_deliverable() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [1, 2, 3], never) == 3
    assert holes.deliverable(10, [11, 12], never) == 2
    assert not holes.needs_fence()
    assert holes.pending() == []


def test_delivery_stops_at_the_first_unproven_hole() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [1, 2, 5, 6], never) == 2
    assert holes.needs_fence()
    [hole] = holes.pending()
    assert (hole.first_position, hole.last_position, hole.fenced) == (3, 4, False)
    assert holes.deliverable(0, [3], never) == 0  # a hole at the front blocks everything
    holes.set_fence(100)
    assert not holes.needs_fence()
    assert holes.pending()[0].fenced


def test_a_fenced_hole_is_passed_only_when_this_snapshot_settles_its_fence() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(2, [5, 6], never) == 0
    holes.set_fence(100)
    assert holes.deliverable(2, [5, 6], lambda fence: fence <= 99) == 0
    assert holes.deliverable(2, [5, 6], lambda fence: fence <= 100) == 2
    # Settled for reporting, but an older snapshot is still judged on its own.
    assert holes.pending() == []
    assert holes.deliverable(2, [5, 6], lambda fence: fence <= 99) == 0
    assert holes.deliverable(2, [5, 6], always) == 2


def test_an_unfenced_hole_is_never_passed() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [2], always) == 0
    assert holes.deliverable(0, [2], always) == 0
    holes.set_fence(7)
    assert holes.deliverable(0, [2], always) == 1


def test_part_of_a_hole_filling_leaves_the_rest_fenced() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [1, 5], never) == 1  # 2, 3, 4 missing
    holes.set_fence(10)
    assert holes.deliverable(1, [3, 5], never) == 0  # 3 committed; 2 and 4 still missing
    assert not holes.needs_fence()  # both lie inside the fenced range
    assert holes.deliverable(1, [3, 5], lambda fence: fence <= 10) == 2


def test_a_new_hole_beside_a_known_one_gets_its_own_fence() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [1, 3], never) == 1
    holes.set_fence(10)
    assert holes.deliverable(0, [1, 3, 4, 9], lambda fence: fence <= 10) == 3
    assert holes.needs_fence()  # 5..8 were never seen before
    holes.set_fence(20)
    assert holes.deliverable(4, [9], lambda fence: fence <= 10) == 0
    assert holes.deliverable(4, [9], lambda fence: fence <= 20) == 1


def test_huge_gaps_are_kept_as_ranges() -> None:
    holes: HoleTracker[int] = HoleTracker()
    assert holes.deliverable(0, [10_000_000_000], never) == 0
    [hole] = holes.pending()
    assert (hole.first_position, hole.last_position) == (1, 9_999_999_999)


def test_the_book_is_bounded_and_forgets_settled_ranges_first() -> None:
    holes: HoleTracker[int] = HoleTracker(max_ranges=4)
    for start in range(0, 40, 4):
        holes.deliverable(start, [start + 3], never)
        holes.set_fence(start)
        holes.deliverable(start, [start + 3], always)
    assert len(holes._ranges) <= 4
    holes.deliverable(100, [103], never)
    assert [h.first_position for h in holes.pending()] == [101]
