import threading
import time

from pyned.kernel.clock import Clock, now_ns
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
