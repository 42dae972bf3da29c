import os
import threading
import time

from pyned.kernel.clock import MAX_ADVANCE_NS, Clock, now_ns
from pyned.kernel.task import TaskState, TaskTable


def test_deadlines_fire_in_order_and_cancel():
    clock = Clock()
    fired = []
    done = threading.Event()
    clock.after(30_000_000, lambda: (fired.append(3), done.set()))
    clock.after(10_000_000, lambda: fired.append(1))
    h = clock.after(20_000_000, lambda: fired.append(2))
    h.cancel()
    assert done.wait(1)
    clock.stop()
    assert fired == [1, 3]


def test_deadline_is_not_early():
    clock = Clock()
    t = []
    ev = threading.Event()
    start = now_ns()
    clock.after(5_000_000, lambda: (t.append(now_ns()), ev.set()))
    ev.wait(1)
    clock.stop()
    assert t[0] - start >= 5_000_000


def test_clock_learns_how_late_it_wakes_and_spins_the_rest_but_never_fires_early():
    clock = Clock()
    late = []
    done = threading.Event()
    start = now_ns()
    deadlines = [start + 5_000_000 + i * 2_000_000 for i in range(40)]

    def at(deadline, last):
        def fire():
            late.append(now_ns() - deadline)
            if last:
                done.set()
        return fire

    for i, d in enumerate(deadlines):
        clock.at(d, at(d, i == len(deadlines) - 1))
    assert done.wait(2)
    clock.stop()
    assert len(late) == 40 and min(late) >= 0
    # Every host wakes a sleeping thread some microseconds late.
    assert 0 < clock.advance_ns <= MAX_ADVANCE_NS


def test_the_clock_thread_is_real_time_where_allowed_and_threads_it_starts_are_not():
    clock = Clock()
    seen = {}
    done = threading.Event()

    def callback():
        seen["clock"] = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        child = threading.Thread(target=lambda: seen.setdefault("child", os.sched_getscheduler(0)))
        child.start()
        child.join()
        done.set()

    clock.after(1_000_000, callback)
    assert done.wait(1)
    clock.stop()
    assert (seen["clock"] == os.SCHED_FIFO) == clock.realtime
    assert seen["child"] == os.SCHED_OTHER


def test_work_deferred_by_a_callback_runs_after_it_on_the_clock_thread():
    clock = Clock()
    order = []
    done = threading.Event()

    def callback():
        assert clock.defer(lambda: (order.append(("deferred", threading.get_ident())),
                                    done.set()))
        order.append(("callback", threading.get_ident()))

    clock.after(1_000_000, callback)
    assert done.wait(1)
    clock.stop()
    assert [what for what, _ in order] == ["callback", "deferred"]
    assert order[0][1] == order[1][1] != threading.get_ident()
    # Elsewhere nothing is deferred: the caller acts itself.
    assert not clock.defer(lambda: None)


def test_task_exits_once_and_notifies():
    tasks = TaskTable()
    t = tasks.create("x")
    seen = []
    t.on_exit(lambda task: seen.append(task.exit_code))
    t.running()
    assert t.state == TaskState.RUNNING
    assert t.exit(0x66, "reboot")
    assert not t.exit(1, "again")
    assert seen == [0x66] and t.exit_code == 0x66 and t.state == TaskState.ZOMBIE
    late = []
    t.on_exit(lambda task: late.append(1))
    assert late == [1]
    assert tasks.alive() == []


def test_kill_calls_kill_fn_and_has_no_code():
    tasks = TaskTable()
    t = tasks.create("x")
    calls = []
    t.set_kill(lambda: calls.append(1))
    t.kill()
    assert calls == [1] and t.killed and t.exit_code is None
    assert t.wait(0)
    time.sleep(0)
