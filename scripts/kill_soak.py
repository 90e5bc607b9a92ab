#!/usr/bin/env python3
"""kill -9 soak of `kiln train`: SIGKILL a training run at random moments, resume it each time,
and check that no checkpoint is ever lost, torn or wrong, and that the end result is identical
to an uninterrupted run.

What it does:
  1. Reference: `kiln train --config configs/smoke.toml --plain` into <tmp>/ref with
     checkpoints every N steps (--every, default 5) and keep_checkpoints=1000, timing when
     each checkpoint appears (the reference timeline, wall time T_ref).
  2. Soak: the same config (same seed) into <tmp>/soak, SIGKILLed K times (--kills, default
     20). Kill moments are stratified over the reference timeline [0, T_ref] (so they cover
     start-up, both epochs, validation and the end), mapped onto each resumed process via the
     step it resumed from; about a third are instead triggered the moment a
     `checkpoints/.step-*.tmp` directory appears (a kill during a checkpoint write). After
     each kill: `kiln train --resume RUN_DIR --plain`, or a fresh start when the run dir (or
     its config.toml) does not exist yet. After the last kill the resume runs to completion.
  3. Checks, each counted:
     (a) unresumable: a resume that exits non-zero without being killed (reason recorded;
         the soak then starts a fresh run so it can go on).
     (b) after each kill, every `checkpoints/step-*` must be complete: state.json parses and
         its model_sha256/optim_sha256 match the files ("torn"). Each is compared with the
         reference checkpoint of the same step: model.bpk/optim.bpk bytes (sha256), tensor
         values (burnpack parsed, parameter ids ignored) and state.json's state (timings
         ignored). "wrong" = self-consistent but different values/state from the reference.
     (c) checkpoints lost: the newest complete checkpoint seen just before a kill must still
         be there, valid, after it; and a resume must say it resumes from the newest one
         ("resuming from ... (step S").
     (d) final: artifacts/final/model.json weights_sha256 (bitwise) and tensor values vs the
         reference; `kiln eval <final artifact> --json` and `kiln eval RUN --json` (the best
         artifact) accuracy, loss and confusion matrix; final checkpoint vs the reference's
         last checkpoint.
  Byte checks (model.bpk sha256, weights_sha256) fail the run unless --ignore-param-ids,
  which accepts records whose bytes differ only through burn's random parameter ids.

Run from anywhere (paths are relative to the repository):
    python3 scripts/kill_soak.py                 # full: 20 kills
    python3 scripts/kill_soak.py --kills 4       # CI form
    python3 scripts/kill_soak.py --kiln target/debug/kiln --seed 3 --every 5 --keep-tmp

Exit status: 0 when every check passes, 1 when any fails or the soak runs out of time
(--max-seconds, default 600). Standard library only (plus scripts/burnpack.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import burnpack  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = "configs/smoke.toml"
EXPERIMENT = "smoke"
RESUMING = re.compile(r"resuming from (\S+) \(step (\d+)")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def step_of(name: str) -> int:
    return int(name.split("-", 1)[1].split(".", 1)[0])


def checkpoint_names(run_dir: Path) -> list[str]:
    """Complete (renamed) checkpoint directories, oldest first."""
    try:
        names = os.listdir(run_dir / "checkpoints")
    except OSError:
        return []
    return sorted(n for n in names if n.startswith("step-"))


def tmp_names(run_dir: Path) -> list[str]:
    try:
        return [n for n in os.listdir(run_dir / "checkpoints") if n.startswith(".step-")]
    except OSError:
        return []


def tmp_ids(run_dir: Path | None) -> set:
    """(name, inode) of the .step-*.tmp directories: a rewritten one has a new inode, so a
    stale one left by an earlier kill is told apart from a write in progress."""
    out = set()
    for n in tmp_names(run_dir) if run_dir else []:
        try:
            out.add((n, os.stat(run_dir / "checkpoints" / n).st_ino))
        except OSError:
            pass
    return out


def comparable_state(state: dict) -> dict:
    """state.json's loop state without wall-clock figures."""
    s = dict(state)
    s.pop("train_seconds", None)
    s["history"] = [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_sec")}
                    for h in s.get("history", [])]
    return s


class Checkpoint:
    """One checkpoint directory, read and self-checked."""

    def __init__(self, path: Path):
        self.path = path
        self.step = step_of(path.name)
        self.problem = None
        try:
            meta = json.loads((path / "state.json").read_text())
            self.model = (path / "model.bpk").read_bytes()
            self.optim = (path / "optim.bpk").read_bytes()
        except (OSError, ValueError) as e:
            self.problem = f"unreadable: {e}"
            return
        self.model_sha = hashlib.sha256(self.model).hexdigest()
        self.optim_sha = hashlib.sha256(self.optim).hexdigest()
        if meta.get("model_sha256") != self.model_sha:
            self.problem = "model.bpk does not match state.json's model_sha256"
        elif meta.get("optim_sha256") != self.optim_sha:
            self.problem = "optim.bpk does not match state.json's optim_sha256"
        self.state = comparable_state(meta.get("state", {}))
        if self.problem is None:
            try:
                self.model_values = burnpack.tensor_digest(self.model)
                self.optim_values = burnpack.tensor_digest(
                    self.optim, burnpack.optim_rename(self.optim, self.model))
            except (ValueError, KeyError, IndexError) as e:
                self.problem = f"burnpack does not parse: {e}"

    @property
    def valid(self) -> bool:
        return self.problem is None


class Counters:
    def __init__(self):
        self.kills = 0
        self.kills_mid_write = 0  # a .step-*.tmp was left behind by the kill
        self.kills_tmp_triggered = 0
        self.kills_before_run_dir = 0
        self.kills_before_first_ckpt = 0
        self.resumes = 0
        self.unresumable = []  # reasons
        self.torn = {}  # (run dir, step dir) -> why it is not self-consistent
        self.wrong = {}  # (run dir, step dir) -> what differs from the reference (values/state)
        self.bytes_differ = set()  # model.bpk bytes differ from the reference (same step)
        self.optim_bytes_differ = set()
        self.checked = set()
        self.lost = []
        self.wrong_resume_point = []
        self.resume_points_checked = 0
        self.fresh_starts = 0
        self.abandoned_run_dirs = []


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_kiln = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "kiln"
    p.add_argument("--kiln", default=str(default_kiln), help="the kiln binary (%(default)s)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20; CI: 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the kill schedule")
    p.add_argument("--every", type=int, default=5, help="checkpoint every N steps (5)")
    p.add_argument("--tmp-fraction", type=float, default=0.35,
                   help="share of kills triggered by a .step-*.tmp appearing (0.35)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    p.add_argument("--ignore-param-ids", action="store_true",
                   help="do not fail on records whose bytes differ from the reference when "
                        "their tensor values are equal (burn's random parameter ids)")
    p.add_argument("--max-seconds", type=float, default=600, help="give up after this (600)")
    return p.parse_args()


def train_cmd(kiln: str, root: Path, every: int) -> list[str]:
    return [kiln, "train", "--config", CONFIG, "--plain",
            "--set", f'experiment.root="{root}"',
            "--set", f"logging.checkpoint_every_steps={every}",
            "--set", "logging.keep_checkpoints=1000"]


def run_reference(kiln: str, root: Path, every: int, logs: Path, deadline: float):
    """The uninterrupted run; returns (run dir, T_ref, {step: seconds after start})."""
    out, err = open(logs / "ref.out", "wb"), open(logs / "ref.err", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(train_cmd(kiln, root, every), cwd=REPO, stdout=out, stderr=err)
    appeared: dict[int, float] = {}
    run_dir = None
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("reference run took too long")
        if run_dir is None:
            dirs = list_runs(root)
            run_dir = dirs[0] if dirs else None
        if run_dir is not None:
            now = time.monotonic() - t0
            for n in checkpoint_names(run_dir):
                appeared.setdefault(step_of(n), now)
        time.sleep(0.002)
    t_ref = time.monotonic() - t0
    out.close()
    err.close()
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed (exit {proc.returncode}): "
                         f"{(logs / 'ref.err').read_text()[-2000:]}")
    run_dir = Path((logs / "ref.out").read_text().strip().splitlines()[-1])
    for n in checkpoint_names(run_dir):
        appeared.setdefault(step_of(n), t_ref)
    return run_dir, t_ref, appeared


def list_runs(root: Path) -> list[Path]:
    try:
        return sorted(p for p in (root / EXPERIMENT).iterdir() if p.is_dir())
    except OSError:
        return []


def eval_json(kiln: str, target: Path) -> dict:
    r = subprocess.run([kiln, "eval", str(target), "--json"], cwd=REPO, capture_output=True,
                       timeout=120)
    if r.returncode != 0:
        return {"error": r.stderr.decode(errors="replace")[-500:]}
    return json.loads(r.stdout)["report"]


def snapshot_binary(kiln: str, tmp: Path) -> str:
    """A private copy of the binary, so a rebuild during the run cannot mix two binaries."""
    copy = tmp / "kiln"
    shutil.copy2(kiln, copy)
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()[:16]
    mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(kiln).st_mtime))
    print(f"binary {kiln} (built {mtime}, sha256 {digest}...) copied to {copy}")
    return str(copy)


def main() -> int:
    args = parse_args()
    kiln = str(Path(args.kiln) if Path(args.kiln).is_absolute() else REPO / args.kiln)
    if not os.access(kiln, os.X_OK):
        print(f"no kiln binary at {kiln}", file=sys.stderr)
        return 1
    start = time.monotonic()
    deadline = start + args.max_seconds
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="kiln-kill-soak-"))
    logs = tmp / "logs"
    logs.mkdir()
    kiln = snapshot_binary(kiln, tmp)
    c = Counters()
    failed_early = None
    try:
        failed_early = soak(args, kiln, tmp, logs, rng, deadline, c)
    finally:
        if args.keep_tmp or failed_early:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return failed_early or 0


def soak(args, kiln, tmp, logs, rng, deadline, c: Counters) -> int:
    print(f"kiln: {kiln}\ntemporary dir: {tmp}")
    ref_dir, t_ref, timeline = run_reference(kiln, tmp / "ref", args.every, logs, deadline)
    ref = {step_of(n): Checkpoint(ref_dir / "checkpoints" / n) for n in checkpoint_names(ref_dir)}
    bad_ref = [s for s, ck in ref.items() if not ck.valid]
    if bad_ref:
        print(f"reference checkpoints invalid: {bad_ref}")
        return 1
    steps = sorted(ref)
    first_t = timeline[steps[0]]
    # Start-up of a process (load data, build the model) = time of the first checkpoint minus
    # the training time of the steps before it.
    step_times = sorted(timeline[s] for s in steps)
    per_ckpt = (step_times[-1] - first_t) / max(1, len(steps) - 1)
    startup = max(0.0, first_t - per_ckpt)
    print(f"reference: {ref_dir}\n  T_ref {t_ref:.2f} s, {len(steps)} checkpoints "
          f"(step {steps[0]}..{steps[-1]}), first after {first_t:.2f} s, ~{per_ckpt * 1e3:.0f} ms "
          f"apart, start-up ~{startup:.2f} s")

    # Kill moments on the reference timeline, stratified over [0, T_ref), each expressed as
    # (the newest reference checkpoint before it, seconds past that checkpoint), so that a
    # resumed process is killed at the same point of training whatever its start-up took.
    k = args.kills
    targets = [(i + rng.random()) / k * t_ref * 0.97 for i in range(k)]
    anchors = []
    for t in targets:
        passed = [s for s in steps if timeline[s] <= t]
        anchors.append((passed[-1], t - timeline[passed[-1]]) if passed else (None, t))
    tmp_triggered = [rng.random() < args.tmp_fraction for _ in range(k)]

    root = tmp / "soak"
    run_dir: Path | None = None
    known_runs: set[Path] = set()
    attempt = 0
    kill_i = 0
    finished = False
    while not finished:
        if time.monotonic() > deadline:
            print("TIMEOUT: soak ran past --max-seconds")
            return 1
        attempt += 1
        if attempt > 4 * k + 10:
            print("too many attempts; giving up")
            return 1
        resume = run_dir is not None and (run_dir / "config.toml").is_file()
        if resume:
            cmd = [kiln, "train", "--resume", str(run_dir), "--plain"]
            before = [ck for ck in (Checkpoint(run_dir / "checkpoints" / n)
                                    for n in checkpoint_names(run_dir)) if ck.valid]
            resume_step = before[-1].step if before else 0
        else:
            if run_dir is not None:
                c.abandoned_run_dirs.append(str(run_dir))
            cmd = train_cmd(kiln, root, args.every)
            known_runs = set(list_runs(root))
            run_dir = None
            resume_step = 0
            c.fresh_starts += 1
        do_kill = kill_i < k
        # When to kill this process: `offset` seconds after the first checkpoint at or past
        # the anchor step appears (at once if it already exists: then during start-up).
        if do_kill:
            anchor, offset = anchors[kill_i]
            if anchor is not None and anchor <= resume_step:
                anchor, offset = None, rng.random() * startup  # already past: kill in start-up
            by_tmp = tmp_triggered[kill_i]
        err_path = logs / f"attempt-{attempt:03d}.err"
        out_path = logs / f"attempt-{attempt:03d}.out"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.monotonic()
            stale_tmps = tmp_ids(run_dir)
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
            newest_seen = None
            killed = False
            trigger = "timed"
            limit = t0 + (30.0 if do_kill else 180.0)
            reached = t0 if do_kill and anchor is None else None
            while True:
                if proc.poll() is not None:
                    break
                now = time.monotonic()
                if run_dir is None:
                    new = [p for p in list_runs(root) if p not in known_runs]
                    if new:
                        run_dir = new[0]
                if do_kill:
                    names = checkpoint_names(run_dir) if run_dir else []
                    if reached is None and names and step_of(names[-1]) >= anchor:
                        reached = now
                    fire = now >= limit  # a hung process: kill it anyway
                    if fire:
                        trigger = "fallback"
                    elif reached is not None and by_tmp:
                        # Kill the moment a checkpoint write is under way.
                        if tmp_ids(run_dir) - stale_tmps:
                            fire, trigger = True, "tmp"
                        elif now - reached > 1.0 + 3 * per_ckpt:
                            fire, trigger = True, "timed"
                    elif reached is not None and now - reached >= offset:
                        fire = True
                    if fire:
                        newest_seen = step_of(names[-1]) if names else None
                        os.kill(proc.pid, signal.SIGKILL)
                        killed = True
                        break
                    time.sleep(0.0003 if by_tmp else 0.001)
                else:
                    if now > limit or now > deadline:
                        proc.kill()
                        proc.wait()
                        print("TIMEOUT: the final run did not finish")
                        return 1
                    time.sleep(0.02)
            rc = proc.wait()
        elapsed = time.monotonic() - t0
        if run_dir is None:
            new = [p for p in list_runs(root) if p not in known_runs]
            run_dir = new[0] if new else None
        stderr = err_path.read_text(errors="replace")

        # (a) a resume must succeed or be killed; (c) and resume from the newest checkpoint.
        if resume:
            c.resumes += 1
            m = RESUMING.search(stderr)
            if m:
                c.resume_points_checked += 1
                if int(m.group(2)) != resume_step:
                    c.wrong_resume_point.append((attempt, resume_step, int(m.group(2))))
        if not killed and rc != 0:
            reason = next((ln for ln in stderr.splitlines() if ln.startswith("error")),
                          stderr.strip().splitlines()[-1] if stderr.strip() else "")
            label = "resume" if resume else "fresh start"
            print(f"  attempt {attempt}: {label} FAILED, exit {rc}: {reason}")
            if resume:
                c.unresumable.append(f"exit {rc}: {reason}")
                run_dir = None  # start a fresh run so the soak can go on
                continue
            return 1

        if killed:
            c.kills += 1
            kill_i += 1
            if trigger == "tmp":
                c.kills_tmp_triggered += 1
            # A .tmp this process created and did not rename: the kill landed in a write.
            names = checkpoint_names(run_dir) if run_dir else []
            newest_now = step_of(names[-1]) if names else None
            mid_write = bool(tmp_ids(run_dir) - stale_tmps)
            c.kills_mid_write += mid_write
            if run_dir is None or not (run_dir / "config.toml").is_file():
                c.kills_before_run_dir += 1
            elif not names:
                c.kills_before_first_ckpt += 1
            # (b) every checkpoint present is whole and equals the reference.
            status = check_checkpoints(run_dir, ref, c) if run_dir else "no run dir"
            # (c) nothing that existed before the kill is gone.
            if newest_seen is not None:
                valid_steps = [ck.step for ck in (Checkpoint(run_dir / "checkpoints" / n)
                                                  for n in names) if ck.valid]
                if not valid_steps or max(valid_steps) < newest_seen:
                    c.lost.append((c.kills, newest_seen, max(valid_steps, default=None)))
            where = "start-up" if anchor is None else f"step {anchor}"
            print(f"kill {c.kills:2d}/{k} {trigger:>5} ({where} +{offset * 1e3:3.0f} ms) "
                  f"after {elapsed:5.2f} s "
                  f"({'resumed from step ' + str(resume_step) if resume else 'fresh start'}): "
                  f"newest before kill {newest_seen}, after {newest_now}, "
                  f"{'mid-write' if mid_write else 'between writes'}; {status}")
        else:
            label = "resume" if resume else "fresh start"
            print(f"final {label} from step {resume_step} finished in {elapsed:.2f} s (exit {rc})")
            finished = True
    return final_checks(args, kiln, run_dir, ref_dir, ref, c)


def check_checkpoints(run_dir: Path, ref: dict, c: Counters) -> str:
    n_ok = 0
    problems = []
    for name in checkpoint_names(run_dir):
        ck = Checkpoint(run_dir / "checkpoints" / name)
        key = (str(run_dir), name)
        if not ck.valid:
            c.torn[key] = ck.problem
            problems.append(f"{name} TORN ({ck.problem})")
            continue
        r = ref.get(ck.step)
        if r is None:
            c.wrong[key] = "no reference checkpoint of that step"
            problems.append(f"{name} has no reference")
            continue
        c.checked.add(key)
        if ck.model_sha != r.model_sha:
            c.bytes_differ.add(key)
        if ck.optim_sha != r.optim_sha:
            c.optim_bytes_differ.add(key)
        diffs = [what for what, same in (("model values", ck.model_values == r.model_values),
                                         ("optimizer values", ck.optim_values == r.optim_values),
                                         ("loop state", ck.state == r.state)) if not same]
        if diffs:
            c.wrong[key] = ", ".join(diffs)
            problems.append(f"{name} WRONG ({', '.join(diffs)})")
            continue
        n_ok += 1
    return f"{n_ok} checkpoints whole and equal in value" + (
        "; " + "; ".join(problems) if problems else "")


def final_checks(args, kiln, run_dir, ref_dir, ref, c: Counters) -> int:
    print("\nfinal checks")
    check_checkpoints(run_dir, ref, c)
    failures = []

    def manifest(d):
        return json.loads((d / "artifacts/final/model.json").read_text())

    ms, mr = manifest(run_dir), manifest(ref_dir)
    same_sha = ms["weights_sha256"] == mr["weights_sha256"]
    ws = (run_dir / "artifacts/final" / ms["weights_file"]).read_bytes()
    wr = (ref_dir / "artifacts/final" / mr["weights_file"]).read_bytes()
    same_weight_values = burnpack.tensor_digest(ws) == burnpack.tensor_digest(wr)
    print(f"  artifacts/final weights_sha256: soak {ms['weights_sha256'][:16]} ref "
          f"{mr['weights_sha256'][:16]} -> {'identical' if same_sha else 'DIFFERENT'}; "
          f"tensor values {'identical' if same_weight_values else 'DIFFERENT'}")
    if not same_weight_values:
        failures.append("final weights differ in value")
    if not same_sha and not args.ignore_param_ids:
        failures.append("final weights_sha256 differs")

    for label, target_s, target_r in (
            ("eval final artifact", run_dir / "artifacts/final", ref_dir / "artifacts/final"),
            ("eval RUN (best artifact)", run_dir, ref_dir)):
        es, er = eval_json(kiln, target_s), eval_json(kiln, target_r)
        keys = sorted(set(es) | set(er))
        differ = [key for key in keys if es.get(key) != er.get(key)]
        print(f"  {label}: soak accuracy {es.get('accuracy')} loss {es.get('loss')}, ref "
              f"accuracy {er.get('accuracy')} loss {er.get('loss')} -> "
              f"{'identical' if not differ else 'DIFFERENT in ' + ', '.join(differ)}")
        if "error" in es or "error" in er or differ:
            failures.append(f"{label} differs")

    last_s = checkpoint_names(run_dir)[-1]
    last_r = checkpoint_names(ref_dir)[-1]
    cs = Checkpoint(run_dir / "checkpoints" / last_s)
    cr = Checkpoint(ref_dir / "checkpoints" / last_r)
    same_ck_bytes = cs.valid and cs.model_sha == cr.model_sha
    same_ck_values = cs.valid and cs.model_values == cr.model_values
    print(f"  final checkpoint {last_s} vs reference {last_r}: model.bpk bytes "
          f"{'identical' if same_ck_bytes else 'DIFFERENT'}, values "
          f"{'identical' if same_ck_values else 'DIFFERENT'}")
    if last_s != last_r or not same_ck_values:
        failures.append("final checkpoint differs")
    if not same_ck_bytes and not args.ignore_param_ids:
        failures.append("final checkpoint bytes differ")

    leftover = tmp_names(run_dir)
    n_checked = len(c.checked)
    print(f"\nresumes {c.resumes}, fresh starts {c.fresh_starts} "
          f"(abandoned run dirs {len(c.abandoned_run_dirs)}), kills before a run dir "
          f"{c.kills_before_run_dir}, before the first checkpoint {c.kills_before_first_ckpt}, "
          f"tmp-triggered {c.kills_tmp_triggered}, mid checkpoint write {c.kills_mid_write}, "
          f".tmp dirs left in the final run {len(leftover)}")
    print(f"checkpoint inspections {n_checked} distinct; model.bpk bytes differ from the "
          f"reference in {len(c.bytes_differ)}, optim.bpk in {len(c.optim_bytes_differ)} "
          f"(tensor values compared separately: wrong {len(c.wrong)})")
    print(f"resume points checked {c.resume_points_checked}, wrong resume point "
          f"{len(c.wrong_resume_point)} {c.wrong_resume_point or ''}")
    for reason in sorted(set(c.unresumable)):
        print(f"  unresumable x{c.unresumable.count(reason)}: {reason}")
    for (_, name), why in list(c.torn.items())[:10]:
        print(f"  torn {name}: {why}")
    for (_, name), why in list(c.wrong.items())[:10]:
        print(f"  wrong {name}: {why} differ from the reference")
    kinds = Counter(w for why in c.wrong.values() for w in why.split(", "))
    wrong_total = len(set(c.wrong) | (set() if args.ignore_param_ids else c.bytes_differ))
    identical = same_sha and same_weight_values
    print(f"\nkills survived {c.kills - len(c.unresumable)}/{c.kills}, "
          f"unresumable {len(c.unresumable)}, torn checkpoints {len(c.torn)}, "
          f"wrong checkpoints {wrong_total} ({', '.join(f'{k} {v}' for k, v in kinds.items()) or 'values 0'}, "
          f"model.bpk bytes {len(c.bytes_differ)}), checkpoints lost {len(c.lost)}, final weights identical: "
          f"{'yes' if identical else ('values only' if same_weight_values else 'no')}")
    if c.unresumable:
        failures.append("unresumable")
    if c.torn:
        failures.append("torn checkpoints")
    if wrong_total:
        failures.append("wrong checkpoints")
    if c.lost:
        failures.append(f"checkpoints lost {c.lost}")
    if c.wrong_resume_point:
        failures.append("resumed from the wrong checkpoint")
    if failures:
        print("FAILED: " + "; ".join(dict.fromkeys(failures)))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
