"""The AlDD schedule on its own: which steps drag, how many supervision steps, when tracking and stopping happen.

Driven by a fake ``ops`` (no UNet); the last test replays the golden GoodDrag runs' decisions through the schedule.
"""

from __future__ import annotations

import json

import pytest

from dragkit.aldd import AFTER_SUPERVISION, INITIAL, AlddPlan, run_aldd
from dragkit.config import GoodDragConfig



class FakeOps:
    """Records every call. ``moves(step, kind, n)`` says whether tracking n (0-based, overall) moved a handle;
    ``reached_after`` is the number of trackings after which the handles count as arrived (None: never)."""

    def __init__(self, moves=lambda step, kind, n: True, reached=lambda n: False):
        self.calls, self.moves, self.reached_fn, self.n_tracks = [], moves, reached, 0

    def begin(self, step):
        self.calls.append(("begin", step))

    def track(self, step, kind):
        self.calls.append(("track", step, kind))
        moved = self.moves(step, kind, self.n_tracks)
        self.n_tracks += 1
        return moved

    def reached(self):
        return self.reached_fn(self.n_tracks)

    def supervise(self, step):
        self.calls.append(("supervise", step))

    def denoise(self, step):
        self.calls.append(("denoise", step))


def expected_step(step, trackings, j):
    calls = [("begin", step), ("track", step, INITIAL)]
    for _ in range(trackings):
        calls += [("supervise", step)] * j + [("track", step, AFTER_SUPERVISION)]
    return calls + [("denoise", step)]


def test_full_schedule_without_stop():
    plan = AlddPlan(drag_steps=3, trackings_per_step=4, supervision_per_tracking=2, early_stop_trackings=10)
    ops = FakeOps()
    out = run_aldd(plan, ops)
    assert ops.calls == sum((expected_step(i, 4, 2) for i in range(3)), [])
    assert (out.drag_steps_run, out.supervision_steps, out.trackings, out.stop_reason) == (3, 24, 12, "schedule_end")
    assert out.supervision_steps == plan.max_supervision_steps


def test_reached_stops_before_the_next_supervision_and_still_denoises_that_step():
    plan = AlddPlan(drag_steps=3, trackings_per_step=4, supervision_per_tracking=3, early_stop_trackings=10)
    ops = FakeOps(reached=lambda n: n >= 3)  # after the initial tracking + 2 trackings after supervision
    out = run_aldd(plan, ops)
    assert ops.calls == expected_step(0, 2, 3)
    assert (out.drag_steps_run, out.supervision_steps, out.trackings, out.stop_reason) == (1, 6, 2, "reached")


def test_reaching_with_the_last_tracking_of_a_step_is_rechecked_after_the_initial_tracking():
    plan = AlddPlan(drag_steps=2, trackings_per_step=2, supervision_per_tracking=1, early_stop_trackings=10)
    # arrived after the B-th tracking of step 0 (3 trackings), but step 1's initial tracking moves away again
    ops = FakeOps(reached=lambda n: n == 3)
    out = run_aldd(plan, ops)
    assert ops.calls == expected_step(0, 2, 1) + expected_step(1, 2, 1)
    assert out.stop_reason == "schedule_end"


def test_reached_right_after_an_initial_tracking():
    plan = AlddPlan(drag_steps=4, trackings_per_step=2, supervision_per_tracking=3, early_stop_trackings=10)
    ops = FakeOps(reached=lambda n: n >= 4)  # step 0: 3 trackings; step 1's initial tracking arrives
    out = run_aldd(plan, ops)
    assert ops.calls == expected_step(0, 2, 3) + expected_step(1, 0, 3)
    assert (out.drag_steps_run, out.supervision_steps, out.stop_reason) == (2, 6, "reached")


def test_no_change_counter_persists_across_steps_and_ignores_initial_trackings():
    plan = AlddPlan(drag_steps=5, trackings_per_step=3, supervision_per_tracking=2, early_stop_trackings=4)
    # trackings after supervision never move a handle; initial trackings always do (they must not reset the count)
    ops = FakeOps(moves=lambda step, kind, n: kind == INITIAL)
    out = run_aldd(plan, ops)
    assert ops.calls == expected_step(0, 3, 2) + expected_step(1, 1, 2)
    assert (out.drag_steps_run, out.trackings, out.no_change, out.stop_reason) == (2, 4, 4, "no_change")


def test_a_moving_tracking_resets_the_no_change_counter():
    plan = AlddPlan(drag_steps=2, trackings_per_step=5, supervision_per_tracking=1, early_stop_trackings=3)
    # overall tracking indices: 0 initial, 1 2 still, 3 moves, 4 5 still, ...
    ops = FakeOps(moves=lambda step, kind, n: n == 3)
    out = run_aldd(plan, ops)
    assert out.trackings == 6 and out.stop_reason == "no_change"  # 1, 2 still; 3 moves; 4, 5, 6 still → stop


def test_plan_from_config_clamps_to_the_steps_left():
    cfg = GoodDragConfig()
    plan = AlddPlan.from_config(cfg, available_steps=38)
    assert (plan.drag_steps, plan.trackings_per_step, plan.supervision_per_tracking, plan.early_stop_trackings) == (
        7, 10, 3, 10)
    assert plan.max_supervision_steps == 210  # 7 · 10 · 3, the reference's upper bound
    assert AlddPlan.from_config(cfg, available_steps=5).drag_steps == 5


@pytest.mark.golden
@pytest.mark.parametrize("case", ["gooddrag_full", "gooddrag_full_nonsquare"])
def test_schedule_reproduces_the_golden_decisions(case, golden_dir):
    """Feed the golden run's tracking results through the schedule: same events, same step counts, same stop."""
    traj = json.loads((golden_dir / case / "trajectory.json").read_text())
    inputs = json.loads((golden_dir / case / "inputs.json").read_text())
    hp = {k: v["value"] for k, v in inputs["hyperparameters"].items()}
    recorded = traj["tracking"]
    targets = traj["targets_rc"]

    class Replay(FakeOps):
        def __init__(self):
            super().__init__()
            self.handles, self.events, self.steps = traj["handles_rc_init"], [], 0

        def track(self, step, kind):
            super().track(step, kind)
            rec = recorded[len(self.events)]
            assert rec["before_rc"] == self.handles
            self.events.append((step, kind, self.steps))
            moved, self.handles = rec["after_rc"] != self.handles, rec["after_rc"]
            return moved

        def reached(self):
            return all(((h[0] - g[0]) ** 2 + (h[1] - g[1]) ** 2) ** 0.5 < 2.0 for h, g in zip(self.handles, targets))

        def supervise(self, step):
            super().supervise(step)
            self.steps += 1

    cfg = GoodDragConfig(drag_denoise_steps=hp["drag_end_step"], trackings_per_denoise=hp["track_per_step"],
                         supervision_steps_per_tracking=hp["max_drag_per_track"],
                         early_stop_trackings=hp["max_track_no_change"])
    ops = Replay()
    out = run_aldd(AlddPlan.from_config(cfg, traj["n_actual_inference_step"]), ops)
    kinds = {"initial": INITIAL, "after_J_steps": AFTER_SUPERVISION}
    assert ops.events == [(r["drag_step_index"], kinds[r["kind"]], r["opt_steps_so_far"]) for r in recorded]
    assert out.supervision_steps == traj["n_opt_steps"]
    assert out.no_change == traj["no_change_track_num_end"]
    timesteps = traj["denoise_timesteps"]
    assert timesteps[:out.drag_steps_run] == traj["drag_timesteps"]
    assert out.drag_steps_run == traj["masactrl_registered_before_denoise_step_index"]
    steps_per_t = [sum(1 for c in ops.calls if c[0] == "supervise" and c[1] == i) for i in range(out.drag_steps_run)]
    assert steps_per_t == [sum(1 for s in traj["opt_steps"] if s["t"] == t) for t in traj["drag_timesteps"]]
