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
