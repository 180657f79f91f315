#!/usr/bin/env python3
"""Trial of the pytest-memcheck gate on real third-party test suites.

For each project: download its pinned sdist from PyPI, extract it, make a
venv with the project + its test deps + pytest + pytest-randomly +
pytest-memcheck, then

  * one plain run without the plugin (``-p no:memcheck``),
  * one baseline run (``--memcheck-update``, randomly seed 1),
  * three gated runs (``--memcheck``, randomly seeds / PYTHONHASHSEED 2, 3, 4),
  * with --xdist: three more gated runs under ``-n 2`` (pytest-xdist, random
    orders: seeds / PYTHONHASHSEED 5, 6, 7) against the same serial baselines,
  * unless --no-peak-runs: three more ``--memcheck-update`` runs (seeds 2-4)
    into fresh baseline dirs, to count tests whose recorded peak is identical
    across seeds 1-4 (used while the plugin has no per-run JSON output),
  * with --native: ``--memcheck-native`` on the baseline and every gated run
    (native memory gated too); the report adds, from the runs' JSON, how many
    tests have a nonzero native_peak / native_retained and how many have the
    same native figures in every run.

Failures are compared per test id through ``--junitxml``.  A *false alarm* is
a test that passes plainly but fails a gated run with a message mentioning
"memcheck".  A Markdown table is printed at the end.

Stdlib only (Python >= 3.11).  Usage:

    python bench/real_suites.py [--workdir DIR] [--projects a,b,c]
        [--plain-seeds 1,2,3,4] [--wheel WHL] [--wheel-dir DIR] [--xdist]
        [--native] [--prepare-only] [--wait-ready]

The plugin wheel is --wheel, else the newest *.whl in --wheel-dir (or
$MEMCHECK_WHEEL_DIR; default /tmp/memcheck-wheel) if there is one, else built
from the repository with `pip wheel`.  CI is removed from the runs' environment
(--memcheck-update refuses to write under CI).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
READY_FILE = Path("/tmp/memcheck-ready")
WHEEL_DIR = os.environ.get("MEMCHECK_WHEEL_DIR", "/tmp/memcheck-wheel")

# name -> pinned version, extra test deps, test targets, how to run.
#   tests:  args passed to pytest (paths relative to the extracted sdist)
#   pyargs: run from a neutral cwd with --pyargs (tests live inside the
#           package and must import the *installed*, compiled package)
#   hide:   source package dirs renamed once installed (pytest puts the sdist's
#           root on sys.path for a tests/ package, which would import the
#           uncompiled sources instead of the installed package)
#   extra:  not in the default --projects list
PROJECTS: dict[str, dict] = {
    "more-itertools": {
        "version": "11.2.1", "kind": "pure", "deps": [], "tests": ["tests"],
    },
    "toolz": {
        "version": "1.2.0", "kind": "pure", "deps": [], "tests": ["toolz"],
    },
    "attrs": {
        "version": "26.1.0", "kind": "pure",
        "deps": ["hypothesis", "pympler", "cloudpickle"], "tests": ["tests"],
    },
    "six": {
        "version": "1.17.0", "kind": "pure", "deps": [], "tests": ["test_six.py"],
    },
    "simplejson": {
        "version": "4.3.0", "kind": "C", "deps": [],
        "tests": ["simplejson.tests"], "pyargs": True,
    },
    "ujson": {
        "version": "6.1.0", "kind": "C", "deps": [], "tests": ["tests"],
    },
    "msgpack": {
        "version": "1.2.4", "kind": "C", "deps": [], "tests": ["test"],
    },
    "markupsafe": {
        "version": "3.0.4", "kind": "C", "deps": [], "tests": ["tests"],
    },
    # bundled libzstd, which takes its contexts from malloc: native-heavy
    "zstandard": {
        "version": "0.25.0", "kind": "C", "deps": [], "tests": ["tests"],
        "hide": ["zstandard"], "extra": True,
    },
}
DEFAULT_PROJECTS = ",".join(n for n, s in PROJECTS.items() if not s.get("extra"))

BASE_DEPS = ["pytest", "pytest-randomly"]
GATED_SEEDS = (2, 3, 4)
XDIST_SEEDS = (5, 6, 7)
XDIST_WORKERS = 2
RUN_TIMEOUT = 900  # seconds per pytest run


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, *, cwd=None, env=None, check=True, logfile=None, timeout=None):
    log("$ " + " ".join(str(c) for c in cmd))
    out = open(logfile, "w") if logfile else subprocess.DEVNULL
    try:
        p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=out,
                           stderr=subprocess.STDOUT, timeout=timeout)
    finally:
        if logfile:
            out.close()
    if check and p.returncode != 0:
        tail = Path(logfile).read_text(errors="replace")[-3000:] if logfile else ""
        raise RuntimeError(f"command failed ({p.returncode}): {cmd}\n{tail}")
    return p.returncode


def clean_env(hashseed: int | None = None) -> dict:
    env = dict(os.environ)
    for k in list(env):
        # --memcheck-update refuses under CI; also keep pytest config neutral.
        if k in ("CI", "GITHUB_ACTIONS", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
                 "PYTHONPATH", "VIRTUAL_ENV") or k.startswith("MEMCHECK"):
            env.pop(k)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if hashseed is not None:
        env["PYTHONHASHSEED"] = str(hashseed)
    return env


# ---------------------------------------------------------------- prepare
def prepare(name: str, spec: dict, work: Path, xdist: bool = False) -> dict:
    ver = spec["version"]
    dl = work / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    norm = name.replace("-", "_").lower()
    found = [f for f in dl.glob("*.tar.gz")
             if f.name.lower().replace("-", "_").startswith(f"{norm}_{ver}.")]
    if not found:
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
            "--no-binary", ":all:", "-d", dl, f"{name}=={ver}"],
           env=clean_env(), logfile=work / f"{name}-download.log")
        found = [f for f in dl.glob("*.tar.gz")
                 if f.name.lower().replace("-", "_").startswith(f"{norm}_{ver}.")]
    sdist = found[0]
    src_root = work / "src"
    src = src_root / sdist.name[: -len(".tar.gz")]
    if not src.exists():
        src_root.mkdir(exist_ok=True)
        with tarfile.open(sdist) as tf:
            tf.extractall(src_root, filter="data")
    for t in spec["tests"]:
        if not spec.get("pyargs") and not (src / t).exists():
            raise RuntimeError(f"{name}: sdist has no {t}")
    venv = work / f"{name}-venv"
    py = venv / "bin" / "python"
    marker = venv / ".deps-installed"
    hidden = [(src / h, src / f"{h}.sdist-hidden") for h in spec.get("hide", ())]
    if not marker.exists():
        for d, h in hidden:
            if h.exists() and not d.exists():
                h.rename(d)
        if venv.exists():
            shutil.rmtree(venv)
        sh([sys.executable, "-m", "venv", venv])
        sh([py, "-m", "pip", "install", "-q", "-U", "pip"], env=clean_env(),
           logfile=work / f"{name}-pip.log")
        sh([py, "-m", "pip", "install", "-q", src, *spec["deps"], *BASE_DEPS],
           env=clean_env(), logfile=work / f"{name}-install.log")
        marker.write_text("ok\n")
    for d, h in hidden:
        if d.exists():
            d.rename(h)
    xmarker = venv / ".xdist-installed"
    if xdist and not xmarker.exists():
        sh([py, "-m", "pip", "install", "-q", "pytest-xdist"], env=clean_env(),
           logfile=work / f"{name}-xdist-install.log")
        xmarker.write_text("ok\n")
    return {"src": src, "py": py, "venv": venv}


def memcheck_wheel(work: Path, explicit: str | None = None,
                   wheel_dir: str = WHEEL_DIR) -> Path:
    if explicit:
        return Path(explicit).resolve()
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "*.whl")),
                    key=os.path.getmtime)
    if wheels:
        return Path(wheels[-1])
    wdir = work / "memcheck-wheel"
    if wdir.exists():
        shutil.rmtree(wdir)
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wdir, REPO],
       env=clean_env(), logfile=work / "memcheck-wheel.log")
    return sorted(wdir.glob("*.whl"))[-1]


def install_memcheck(info: dict, wheel: Path, work: Path, name: str) -> None:
    sh([info["py"], "-m", "pip", "install", "-q", "--force-reinstall",
        "--no-deps", wheel], env=clean_env(),
       logfile=work / f"{name}-memcheck-install.log")
    # its runtime deps (if any), without touching the rest
    sh([info["py"], "-m", "pip", "install", "-q", wheel], env=clean_env(),
       logfile=work / f"{name}-memcheck-install2.log")


def has_option(py: Path, opt: str, cwd: Path) -> bool:
    p = subprocess.run([str(py), "-m", "pytest", "--help"], cwd=cwd,
                       env=clean_env(), capture_output=True, text=True)
    return opt in p.stdout


# ---------------------------------------------------------------- running
def _msg(el) -> str:
    m, t = el.get("message") or "", el.text or ""
    return t if m.split("\n")[0] in t else m + "\n" + t


def parse_junit(path: Path) -> dict:
    """test id -> (outcome, message)."""
    res = {}
    if not path.exists():
        return res
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        tid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        outcome, msg = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                msg = _msg(child)
                break
            if child.tag == "skipped":
                outcome = "skipped"
        # a failure in teardown comes as a second child: prefer failure/error
        if outcome in ("passed", "skipped"):
            for child in tc:
                if child.tag in ("failure", "error"):
                    outcome, msg = child.tag, _msg(child)
        res[tid] = (outcome, msg.strip())
    return res


def run_pytest(name, spec, info, work, label, extra, seed, hashseed,
               plugin_name, workers=0):
    src = info["src"]
    cwd = work / "neutral" if spec.get("pyargs") else src
    cwd.mkdir(exist_ok=True)
    junit = work / f"{name}-{label}.xml"
    logf = work / f"{name}-{label}.log"
    targets = (["--pyargs", *spec["tests"]] if spec.get("pyargs")
               else list(spec["tests"]))
    # -P: do not put cwd on sys.path, so the installed (compiled) package is
    # the one under test, not the uncompiled source tree.
    # workers > 0: pytest-xdist's -n; pytest-randomly shuffles each worker's
    # share with the same seed, and xdist's load scheduling adds its own order.
    dist = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    cmd = [info["py"], "-P", "-m", "pytest", "-p", "no:cacheprovider",
           "-p", "randomly", *dist, f"--randomly-seed={seed}",
           "--junitxml", junit, "-q", *extra, *targets]
    if junit.exists():
        junit.unlink()
    t0 = time.monotonic()
    rc = sh(cmd, cwd=cwd, env=clean_env(hashseed), check=False, logfile=logf,
            timeout=RUN_TIMEOUT)
    dt = time.monotonic() - t0
    results = parse_junit(junit)
    log(f"{name} {label}: rc={rc} {len(results)} tests {dt:.1f}s")
    if rc not in (0, 1):
        log(f"{name} {label}: pytest rc={rc}; log tail:\n"
            + logf.read_text(errors="replace")[-4000:])
    return {"rc": rc, "time": dt, "results": results, "log": logf,
            "json": None}


def load_peaks(path: Path, keys=("peak", "peak_bytes", "peak_kib", "peak_kb",
                                  "peak_mib")) -> dict:
    """Best effort: test id -> peak bytes (or the first of `keys` present in
    a test's record) from --memcheck-json output."""
    if not path or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except Exception:
        return {}
    out = {}

    def peak_of(rec):
        for k in keys:
            if isinstance(rec, dict) and k in rec:
                return rec[k]
        return None

    def walk(obj, key=None):
        if isinstance(obj, dict):
            # the results JSON: {"tests": [{"nodeid", "measured": {"peak", ...}}]}
            p = peak_of(obj.get("measured")) if "nodeid" in obj else peak_of(obj)
            tid = obj.get("nodeid") or obj.get("test") or obj.get("id") or key
            if p is not None and tid is not None:
                out[str(tid)] = p
                return
            for k, v in obj.items():
                walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)

    walk(data)
    return out


def load_baseline_peaks(d: Path) -> dict:
    """(toml file, test key) -> peak bytes, from a baseline directory."""
    out = {}
    for f in sorted(d.rglob("*.toml")) if d.exists() else []:
        try:
            data = tomllib.loads(f.read_text())
        except Exception as e:
            log(f"cannot parse {f}: {e}")
            continue
        for k, v in data.items():
            if k != "memcheck" and isinstance(v, dict) and "peak" in v:
                out[(str(f.relative_to(d)), k)] = v["peak"]
    return out


def is_memcheck(msg: str) -> bool:
    return "memcheck" in msg.lower()


def trial(name, spec, work, plugin_name, wheel, peak_runs=True, plain_seeds=(1,),
          xdist=False, native=False):
    info = prepare(name, spec, work, xdist)
    out = {"name": name, "kind": spec["kind"], "version": spec["version"],
           "native": native}
    plain = run_pytest(name, spec, info, work, "plain",
                       ["-p", f"no:{plugin_name}"], 1, 1, plugin_name)
    out["plain"] = plain
    out["plain_extra"] = [
        run_pytest(name, spec, info, work, f"plain{s}", ["-p", f"no:{plugin_name}"],
                   s, s, plugin_name)
        for s in plain_seeds if s != 1]
    if wheel is None:
        return out
    install_memcheck(info, wheel, work, name)
    base_dir = work / f"{name}-baselines"
    if base_dir.exists():
        shutil.rmtree(base_dir)
    json_ok = has_option(info["py"], "--memcheck-json",
                         work / "neutral" if spec.get("pyargs") else info["src"])
    # "--opt=value": before plugins load, pytest takes a separate value of an
    # unknown option for a path when picking the rootdir.
    common = [f"--memcheck-baseline-dir={base_dir}"]
    if native:
        common.append("--memcheck-native")

    def jextra(label):
        if not json_ok:
            return [], None
        p = work / f"{name}-{label}.json"
        if p.exists():
            p.unlink()
        return ["--memcheck-json", p], p

    je, jp = jextra("baseline")
    base = run_pytest(name, spec, info, work, "baseline",
                      ["--memcheck-update", *common, *je], 1, 1, plugin_name)
    base["json"] = jp
    out["baseline"] = base
    out["gated"] = []
    for s in GATED_SEEDS:
        je, jp = jextra(f"gated{s}")
        g = run_pytest(name, spec, info, work, f"gated{s}",
                       ["--memcheck", *common, *je], s, s, plugin_name)
        g["json"] = jp
        out["gated"].append(g)
    out["xgated"] = []
    for s in XDIST_SEEDS if xdist else ():
        je, jp = jextra(f"xgated{s}")
        g = run_pytest(name, spec, info, work, f"xgated{s}",
                       ["--memcheck", *common, *je], s, s, plugin_name,
                       workers=XDIST_WORKERS)
        g["json"] = jp
        out["xgated"].append(g)
    out["json_ok"] = json_ok
    if peak_runs and not json_ok:
        # No per-run JSON: measure peaks again with --memcheck-update into a
        # fresh baseline dir per seed, and compare the written peaks.
        peaks = [load_baseline_peaks(base_dir)]
        out["peak_times"] = []
        for s in GATED_SEEDS:
            d = work / f"{name}-peaks-seed{s}"
            if d.exists():
                shutil.rmtree(d)
            pr = run_pytest(name, spec, info, work, f"peaks{s}",
                            ["--memcheck-update", f"--memcheck-baseline-dir={d}",
                             *(["--memcheck-native"] if native else [])],
                            s, s, plugin_name)
            out["peak_times"].append(pr["time"])
            peaks.append(load_baseline_peaks(d))
        out["peaks"] = peaks
    return out


# ---------------------------------------------------------------- report
def summarize(r: dict) -> dict:
    plain = r["plain"]["results"]
    plain_fail = {t for run in [r["plain"], *r.get("plain_extra", [])]
                  for t, (o, _) in run["results"].items() if o in ("failed", "error")}
    s = {"tests": len(plain), "plain_fail": len(plain_fail),
         "plain_time": r["plain"]["time"]}
    if "gated" not in r:
        return s
    s["base_time"] = r["baseline"]["time"]
    s["base_fail"] = sorted(t for t, (o, _) in r["baseline"]["results"].items()
                            if o in ("failed", "error") and t not in plain_fail)
    s["gated_times"] = [g["time"] for g in r["gated"]]
    over, alarms, other = set(), {}, {}
    s["over_runs"], s["alarm_runs"] = [], []
    s["xover_runs"], s["xalarm_runs"] = [], []
    s["xgated_times"] = [g["time"] for g in r.get("xgated", [])]
    runs = [("", seed, g) for seed, g in zip(GATED_SEEDS, r["gated"])]
    runs += [("x", seed, g) for seed, g in zip(XDIST_SEEDS, r.get("xgated", []))]
    for tag, seed, g in runs:
        # a seed is labelled "x5" for a -n 2 run
        label = f"{tag}{seed}"
        n_over = n_alarm = 0
        for t, (o, msg) in g["results"].items():
            if o not in ("failed", "error"):
                continue
            if is_memcheck(msg):
                over.add(t)
                n_over += 1
                if t not in plain_fail:
                    n_alarm += 1
                    alarms.setdefault(t, []).append((label, msg))
            elif t not in plain_fail:
                other.setdefault(t, []).append((label, msg))
        s[f"{tag}over_runs"].append(n_over)
        s[f"{tag}alarm_runs"].append(n_alarm)
        missing = set(plain) - set(g["results"])
        if missing:
            other.setdefault("<missing from gated run>", []).append(
                (label, f"{len(missing)} tests missing, e.g. {sorted(missing)[:3]}"))
    s["over"] = len(over)
    s["alarms"] = alarms
    s["other"] = other
    if r.get("json_ok"):
        peaks = [load_peaks(x["json"]) for x in [r["baseline"], *r["gated"]]]
        common = set(peaks[0]).intersection(*peaks[1:]) if peaks[0] else set()
        same = sum(1 for t in common if len({p[t] for p in peaks}) == 1)
        s["identical"] = f"{same}/{len(common)}" if common else "n/a"
    elif r.get("peaks"):
        peaks = r["peaks"]
        common = set(peaks[0]).intersection(*peaks[1:])
        same = [t for t in common if len({p[t] for p in peaks}) == 1]
        s["identical"] = f"{len(same)}/{len(common)}" if common else "n/a"
        # largest relative spread, to show how far apart peaks wander
        spread = []
        for t in common:
            vals = [p[t] for p in peaks]
            lo, hi = min(vals), max(vals)
            spread.append((hi - lo, (hi - lo) / max(lo, 1), t, vals))
        spread.sort(reverse=True)
        s["spread"] = spread[:5]
    else:
        s["identical"] = "n/a"
    if r.get("native"):
        s.update(native_summary(r))
    return s


NATIVE_KEYS = ("native_peak", "native_retained")


def native_summary(r: dict) -> dict:
    """From the runs' JSON: tests with a nonzero native figure (in any run),
    and tests whose native figures are the same in every run (serial runs:
    baseline + gated; all: with the -n 2 runs)."""
    out = {"native_json": bool(r.get("json_ok"))}
    if not r.get("json_ok"):
        return out
    serial = [r["baseline"], *r["gated"]]
    runs = serial + r.get("xgated", [])
    figs = {k: [load_peaks(x["json"], (k,)) for x in runs] for k in NATIVE_KEYS}
    tests = set().union(*(set(p) for k in NATIVE_KEYS for p in figs[k]))
    out["native_tests"] = len(tests)
    for k in NATIVE_KEYS:
        out[f"{k}_nonzero"] = len({t for p in figs[k] for t, v in p.items() if v})
        out[f"{k}_max"] = max((v for p in figs[k] for v in p.values()), default=0)

    def same(nruns):
        common = set.intersection(*(set(p[:nruns][i]) for p in figs.values()
                                    for i in range(nruns)))
        moved = {}
        for t in common:
            vals = {k: [figs[k][i][t] for i in range(nruns)] for k in NATIVE_KEYS}
            if any(len(set(v)) > 1 for v in vals.values()):
                moved[t] = vals
        return len(common) - len(moved), len(common), moved

    n_same, n_common, moved = same(len(serial))
    out["native_identical_serial"] = f"{n_same}/{n_common} ({len(serial)} runs)"
    if len(runs) > len(serial):
        n_same, n_common, moved = same(len(runs))
        out["native_identical_all"] = f"{n_same}/{n_common} ({len(runs)} runs)"
    # the tests whose native figures moved, the widest spread first
    out["native_moved"] = sorted(
        ((max(max(v) - min(v) for v in vals.values()), t, vals)
         for t, vals in moved.items()), key=lambda x: (-x[0], x[1]))
    return out


def unrun_row(r: dict, s: dict, ncol: int) -> str:
    """A project whose gated runs did not happen: its plain run, dashes for the rest."""
    return (f"| {r['name']} {r['version']} | {r['kind']} | "
            f"{s['tests']} | {s['plain_time']:.1f} |" + " - |" * (ncol - 4))


def table(rows) -> str:
    if any(r.get("native") for r, _ in rows):
        return native_table(rows)
    xdist = any(r.get("xgated") for r, _ in rows)
    hdr = ("| project | kind | tests | plain s | baseline s | gated s (3 runs) "
           "| over budget (per run: union) | false alarms | identical peak (4 runs) |")
    ncol = 9
    if xdist:
        hdr += (f" false alarms per run, serial | -n {XDIST_WORKERS} gated s (3 runs) "
                f"| false alarms per run, -n {XDIST_WORKERS} |")
        ncol += 3
    lines = [hdr, "|" + "---|" * ncol]
    for r, s in rows:
        if "gated" not in r:
            lines.append(unrun_row(r, s, ncol))
            continue
        g = " / ".join(f"{t:.1f}" for t in s["gated_times"])
        line = (
            f"| {r['name']} {r['version']} | {r['kind']} | {s['tests']} | "
            f"{s['plain_time']:.1f} | {s['base_time']:.1f} | {g} | "
            f"{'/'.join(map(str, s['over_runs']))}: {s['over']} | "
            f"{len(s['alarms'])} | {s['identical']} |")
        if xdist:
            xg = " / ".join(f"{t:.1f}" for t in s["xgated_times"]) or "-"
            line += (f" {' / '.join(map(str, s['alarm_runs']))} | {xg} | "
                     f"{' / '.join(map(str, s['xalarm_runs'])) or '-'} |")
        lines.append(line)
    return "\n".join(lines)


def native_table(rows) -> str:
    """The --native runs' table: times, false alarms, native figures."""
    xdist = any(r.get("xgated") for r, _ in rows)
    hdr = ("| project | kind | tests | plain s | baseline s | serial shuffled: gated s "
           "| false alarms per run |")
    ncol = 7
    if xdist:
        hdr += (f" `-n {XDIST_WORKERS}`: gated s | false alarms per run |")
        ncol += 2
    hdr += (" tests with native_peak > 0 | with native_retained > 0 "
            "| native figures identical in every run |")
    ncol += 3
    lines = ["All runs with `--memcheck-native` (baseline and gated).", "",
             hdr, "|" + "---|" * ncol]
    for r, s in rows:
        if "gated" not in r:
            lines.append(unrun_row(r, s, ncol))
            continue
        g = " / ".join(f"{t:.1f}" for t in s["gated_times"])
        line = (f"| {r['name']} {r['version']} | {r['kind']} | {s['tests']} | "
                f"{s['plain_time']:.1f} | {s['base_time']:.1f} | {g} | "
                f"{' / '.join(map(str, s['alarm_runs']))} |")
        if xdist:
            xg = " / ".join(f"{t:.1f}" for t in s["xgated_times"]) or "-"
            line += f" {xg} | {' / '.join(map(str, s['xalarm_runs'])) or '-'} |"
        if s.get("native_json"):
            ident = s.get("native_identical_all") or s["native_identical_serial"]
            line += (f" {s['native_peak_nonzero']} | {s['native_retained_nonzero']} "
                     f"| {ident} |")
        else:
            line += " n/a (no --memcheck-json) | n/a | n/a |"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/memcheck-real-suites")
    ap.add_argument("--projects", default=DEFAULT_PROJECTS,
                    help=f"comma list from: {', '.join(PROJECTS)} (default: all "
                    "but zstandard)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="download, build venvs and do the plain runs only")
    ap.add_argument("--wait-ready", action="store_true",
                    help=f"wait (<=60 min) for {READY_FILE} before installing the plugin")
    ap.add_argument("--plugin-name", default="memcheck",
                    help="pytest plugin name used for -p no:NAME")
    ap.add_argument("--wheel", default=None,
                    help="pytest-memcheck wheel to install (default: the newest *.whl "
                    f"in --wheel-dir if any, else build one from {REPO})")
    ap.add_argument("--wheel-dir", default=WHEEL_DIR,
                    help="where to look for a built wheel (default: $MEMCHECK_WHEEL_DIR "
                    "or /tmp/memcheck-wheel)")
    ap.add_argument("--xdist", action="store_true",
                    help=f"also gate three runs under -n {XDIST_WORKERS} (pytest-xdist, "
                    f"seeds {', '.join(map(str, XDIST_SEEDS))}) against the serial baselines")
    ap.add_argument("--plain-seeds", default="1",
                    help="seeds of the plain runs (e.g. 1,2,3,4 to tell the suite's own "
                    "order-dependent failures from the plugin's)")
    ap.add_argument("--no-peak-runs", action="store_true",
                    help="skip the 3 extra --memcheck-update runs (seeds 2-4, fresh "
                    "baseline dirs) used to count tests with identical peaks")
    ap.add_argument("--native", action="store_true",
                    help="add --memcheck-native to the baseline and gated runs (native "
                    "memory counted and gated too) and report the native figures")
    ap.add_argument("--report-json", default=None,
                    help="also write the summary as JSON here")
    a = ap.parse_args()
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in a.projects.split(",") if n.strip()]
    for n in names:
        if n not in PROJECTS:
            ap.error(f"unknown project {n}")

    if not a.prepare_only:
        for n in names:  # prepare everything while waiting
            prepare(n, PROJECTS[n], work, a.xdist)
        if a.wait_ready:
            deadline = time.monotonic() + 3600
            while not READY_FILE.exists() and time.monotonic() < deadline:
                log(f"waiting for {READY_FILE} ...")
                time.sleep(120)
            if not READY_FILE.exists():
                log("plugin not ready after 60 min; plain runs only")
                a.prepare_only = True
    wheel = None if a.prepare_only else memcheck_wheel(work, a.wheel, a.wheel_dir)

    rows = []
    for n in names:
        try:
            r = trial(n, PROJECTS[n], work, a.plugin_name, wheel, not a.no_peak_runs,
                      [int(x) for x in a.plain_seeds.split(",")], a.xdist, a.native)
        except Exception as e:  # keep going with other projects
            log(f"{n}: ERROR {e}")
            continue
        rows.append((r, summarize(r)))

    print("\n## Results\n")
    print(table(rows))
    for r, s in rows:
        if s["plain_fail"]:
            print(f"\n{r['name']}: {s['plain_fail']} test(s) fail without the plugin "
                  "(the suite's own)")
        if "gated" not in r:
            continue
        if s.get("spread"):
            print(f"\n{r['name']}: largest peak spread across seeds 1-4 (bytes):")
            for d, rel, t, vals in s["spread"]:
                print(f"- {t[0]}::{t[1]}: {vals} (+{d} B, {rel:.0%})")
        if s.get("native_json"):
            print(f"\n{r['name']}: native figures over {s['native_tests']} tests: "
                  f"{s['native_peak_nonzero']} with native_peak > 0 (max "
                  f"{s['native_peak_max']} B), {s['native_retained_nonzero']} with "
                  f"native_retained > 0 (max {s['native_retained_max']} B); identical "
                  f"in every serial run: {s['native_identical_serial']}"
                  + (f", in every run: {s['native_identical_all']}"
                     if s.get("native_identical_all") else ""))
            for d, t, vals in s["native_moved"][:5]:
                print(f"- {t}: " + "; ".join(f"{k} {v}" for k, v in vals.items())
                      + f" (spread {d} B)")
        if s["base_fail"]:
            print(f"\n### {r['name']}: failing in --memcheck-update run only")
            for t in s["base_fail"][:5]:
                print(f"- {t}: {r['baseline']['results'][t][1][:2000]}")
        if s["alarms"]:
            print(f"\n### {r['name']}: false alarms ({len(s['alarms'])})")
            for t, lst in list(s["alarms"].items())[:10]:
                seeds = ",".join(str(x[0]) for x in lst)
                print(f"- `{t}` (seeds {seeds}):\n```\n{lst[0][1][:3000]}\n```")
        if s["other"]:
            print(f"\n### {r['name']}: other gated-only failures ({len(s['other'])})")
            for t, lst in list(s["other"].items())[:5]:
                print(f"- `{t}` (seeds {','.join(str(x[0]) for x in lst)}):\n"
                      f"```\n{lst[0][1][:3000]}\n```")
    if a.report_json:
        Path(a.report_json).write_text(json.dumps(
            [{"name": r["name"], **{k: v for k, v in s.items()}}
             for r, s in rows], indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
