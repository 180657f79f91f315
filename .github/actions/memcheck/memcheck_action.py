"""The steps of the pytest-memcheck composite action (action.yml runs `python memcheck_action.py STEP`).

Every step reads its inputs from the environment (`INPUT_*`, set by action.yml through `env:`,
and the runner's `GITHUB_*`), never from its command line, and writes its outputs to
`$GITHUB_OUTPUT`. The steps, in order:

  install-key, install
          only with `install: pypi` or `install: source`: a cache key, then pytest-memcheck
          installed from a wheel kept in the cache directory (restored by actions/cache between
          the two): downloaded from PyPI, or built from the action's own source (needs Rust)
  base    fetch the pull request's base branch (with the job's token, which actions/checkout
          with `persist-credentials: false` did not leave behind), so the baselines can be
          compared with it
  gate    run pytest under --memcheck against the baselines of the work tree (those the pull
          request commits), write the results JSON and the counts as outputs; never fails
  review  list every baseline change against the base (raised first) in the step summary and
          in one pull request comment, edited in place; check the approval of raises; then the
          verdict: fail when the gate failed or a required approval is missing

Standard library only, Python 3.9+: it runs under the interpreter that has pytest-memcheck, which
may be any the plugin supports. Tests run these steps locally (tests/test_pr_flow.py), with
`GITHUB_API_URL` pointing at a stand-in for the GitHub API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The hidden line that finds our comment among the pull request's comments (one per key).
MARKER = "<!-- pytest-memcheck{key} -->"
GATED = ("ok", "over", "improved")


# -- plumbing ------------------------------------------------------------------------------------
def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def flag(name: str) -> bool:
    return env(name).strip().lower() in ("1", "true", "yes", "on")


def escape_data(text: str) -> str:
    """GitHub's escaping of a workflow command's message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def command(kind: str, message: str, title: str = "memcheck") -> None:
    title = escape_data(title).replace(":", "%3A").replace(",", "%2C")
    print(f"::{kind} title={title}::{escape_data(message)}", flush=True)


def set_outputs(**values: Any) -> None:
    """Append `name=value` to $GITHUB_OUTPUT (the delimiter form, so no value can add another)."""
    path = env("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for name, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            delimiter = "memcheck_" + base64.b32encode(os.urandom(10)).decode()
            f.write(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")


def append_summary(markdown: str) -> None:
    path = env("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown)


def workdir() -> Path:
    """The project directory: `working-directory`, relative to the workspace."""
    workspace = Path(env("GITHUB_WORKSPACE") or os.getcwd())
    path = (workspace / env("INPUT_WORKING_DIRECTORY", ".")).resolve()
    if not path.is_dir():
        fail(
            f"working-directory '{env('INPUT_WORKING_DIRECTORY')}' is not a directory under "
            f"{workspace}: nothing was run; set it to the folder of the project to test"
        )
    return path


def fail(message: str) -> None:
    command("error", message)
    print(f"memcheck: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def markdown(text: str) -> str:
    """Text (a node id from a results file: untrusted) rendered as text in Markdown."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+!|~$-])", r"\\\1", text)


def code(text: str) -> str:
    """Text in a Markdown code span (where backslash escapes are shown as they are)."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return "`" + text.replace("`", "'") + "`"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def size(n: int | None) -> str:
    """Bytes as the engine shows them: three significant digits, binary units."""
    if n is None:
        return ""
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    unit = units[0]
    return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2}f} {unit}"


def python() -> str:
    return env("INPUT_PYTHON") or sys.executable


def git_auth_env(token: str, server: str) -> dict[str, str]:
    """Git configuration that sends the token to `server` only, through the environment: never
    on a command line (visible to every process) and never written to .git/config."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{server.rstrip('/')}/.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
        "GIT_TERMINAL_PROMPT": "0",
    }


# -- install -----------------------------------------------------------------------------------
# The action's own checkout: .github/actions/memcheck/ is three levels below the project root.
SOURCE = Path(__file__).resolve().parents[3]
MODES = ("none", "pypi", "source")


def install_mode() -> str:
    mode = env("INPUT_INSTALL", "none").strip() or "none"
    if mode not in MODES:
        fail(f"install: '{mode}' is not one of {', '.join(MODES)}: nothing was installed")
    return mode


def own_version() -> str:
    """The version in the action's pyproject.toml: the wheel that matches this action."""
    text = (SOURCE / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        fail(f"no version in {SOURCE / 'pyproject.toml'}: set the `version` input")
    return match.group(1)


def wheel_dir() -> Path:
    return Path(env("MEMCHECK_WHEELS") or Path.home() / ".cache" / "pytest-memcheck-action")


def interpreter_tag() -> str:
    query = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())"
    out = subprocess.run([python(), "-c", query], capture_output=True, text=True, check=True)
    return "-".join(out.stdout.split())


def source_hash() -> str:
    """A digest of what a build from source depends on."""
    digest = hashlib.sha256()
    files = [SOURCE / n for n in ("Cargo.toml", "Cargo.lock", "pyproject.toml")]
    for folder in ("src", "pytest_plugin"):
        files += sorted(p for p in (SOURCE / folder).rglob("*") if p.is_file())
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".so":
            digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def step_install_key() -> None:
    mode = install_mode()
    if mode == "none":
        set_outputs(key="", path="")
        return
    what = env("INPUT_VERSION").strip() or own_version()
    if mode == "source":
        what = source_hash()
    key = f"pytest-memcheck-{mode}-{what}-{interpreter_tag()}"
    set_outputs(key=re.sub(r"[^A-Za-z0-9._-]", "_", key), path=wheel_dir() / mode)


def step_install() -> None:
    mode = install_mode()
    if mode == "none":
        return
    where = wheel_dir() / mode
    where.mkdir(parents=True, exist_ok=True)
    pip = [python(), "-m", "pip"]
    wheels = sorted(where.glob("pytest_memcheck-*.whl"))
    if not wheels:
        if mode == "pypi":
            version = env("INPUT_VERSION").strip() or own_version()
            fetch = ["download", "--no-deps", "--only-binary", ":all:", "-d", str(where)]
            fetch.append(f"pytest-memcheck=={version}")
        else:
            fetch = ["wheel", "--no-deps", "-w", str(where), str(SOURCE)]
        print("memcheck: " + shlex.join(pip + fetch), flush=True)
        if subprocess.run(pip + fetch, check=False).returncode != 0:
            fail(
                "no pytest-memcheck wheel could be "
                + (
                    "downloaded from PyPI for this interpreter and platform: use `install: "
                    "source` (needs Rust) or install it before the action"
                    if mode == "pypi"
                    else "built from source: a Rust toolchain (>= 1.82) and a C compiler are "
                    "needed, e.g. dtolnay/rust-toolchain before the action"
                )
            )
        wheels = sorted(where.glob("pytest_memcheck-*.whl"))
        if not wheels:
            fail(f"pip reported success but left no pytest-memcheck wheel in {where}")
    else:
        print(f"memcheck: using the cached wheel {wheels[-1].name}", flush=True)
    install = ["install", str(wheels[-1])]
    if subprocess.run(pip + install, check=False).returncode != 0:
        fail(f"pip could not install {wheels[-1]}: see its output above")


# -- base ----------------------------------------------------------------------------------------
def step_base() -> None:
    """The revision to compare the baselines with: the `ref` input as it is, else the pull
    request's base branch, fetched as origin/<base>."""
    ref = env("INPUT_REF").strip()
    base = env("GITHUB_BASE_REF").strip()
    if ref or not base:
        set_outputs(ref=ref)
        return
    if base.startswith("-") or not re.fullmatch(r"[^\s:~^?*\[\\]+", base):
        fail(f"base branch {base!r} is not a branch name git accepts: nothing was fetched")
    cwd = workdir()
    token = env("INPUT_TOKEN")
    extra = git_auth_env(token, env("GITHUB_SERVER_URL", "https://github.com")) if token else {}
    spec = f"+refs/heads/{base}:refs/remotes/origin/{base}"
    result = subprocess.run(
        ["git", "fetch", "--no-tags", "--depth=1", "origin", spec],
        cwd=cwd,
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
        check=False,
    )
    # git never prints the header; the token is masked by the runner besides.
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr.replace(token, "***") if token else result.stderr)
    if result.returncode != 0:
        fail(
            f"could not fetch the base branch '{base}' (git fetch exited {result.returncode}): "
            "the baselines cannot be compared with it. Check that the job's token may read the "
            "repository (`permissions: contents: read`) and the `token` input, or name a "
            "revision that is already fetched with the `ref` input"
        )
    set_outputs(ref=f"origin/{base}")


# -- gate ----------------------------------------------------------------------------------------
def pytest_args() -> list[str]:
    """The `pytest-args` input, split like a POSIX shell command line: `-k "not slow"` is two
    arguments; one argument per line works too."""
    text = env("INPUT_PYTEST_ARGS")
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as e:
        fail(
            f"pytest-args could not be split ({e}): nothing was run; quote as in a shell, "
            'e.g. tests -k "not slow"'
        )
        raise  # not reached


def counts(results: dict[str, Any]) -> dict[str, int]:
    tests = results.get("tests") or []
    outcome = [t.get("outcome") for t in tests]
    return {
        "measured": len(tests),
        "gated": sum(o in GATED for o in outcome),
        "over": outcome.count("over"),
        "new": outcome.count("new"),
        "failed": sum(bool(t.get("failed")) for t in tests),
    }


def step_gate() -> None:
    cwd = workdir()
    results = (cwd / (env("INPUT_RESULTS") or "memcheck-results.json")).resolve()
    if results.exists():
        results.unlink()  # a stale file from an earlier run must not be read as this run's
    args = [python(), "-m", "pytest", "--memcheck", f"--memcheck-json={results}"]
    gate_ref = env("INPUT_GATE_REF").strip()
    if gate_ref:
        args.append(f"--memcheck-ref={gate_ref}")
    args += pytest_args()
    print("memcheck: " + shlex.join(args), flush=True)
    status = subprocess.run(args, cwd=cwd, check=False).returncode
    outputs: dict[str, Any] = {"results": results, "exit-code": status}
    if results.is_file():
        outputs.update(counts(json.loads(results.read_text(encoding="utf-8"))))
    else:
        outputs.update(dict.fromkeys(("measured", "gated", "over", "new", "failed"), 0))
    set_outputs(**outputs)


# -- review --------------------------------------------------------------------------------------
def baseline_changes(cwd: Path, ref: str) -> dict[str, Any] | None:
    """`memcheck diff REF --format json` and `--format markdown`: the baselines of the work tree
    against those committed at REF. None when there is no REF to compare with."""
    if not ref:
        return None

    def diff(fmt: str) -> str:
        result = subprocess.run(
            [python(), "-m", "pytest_memcheck.cli", "diff", ref, "--format", fmt],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            fail(
                f"memcheck diff {ref} failed ({result.stderr.strip()}): the baseline changes "
                "cannot be listed for review"
            )
        return result.stdout

    return {**json.loads(diff("json")), "markdown": diff("markdown")}


def labels(live: bool) -> list[str]:
    """The pull request's labels. `live`: as they are now, from the API, when they decide the
    verdict: the event's payload holds them as they were when the run started, so a re-run of a
    job started before the approval label was added (or after it was removed) would judge by
    the old ones. The payload is the fallback when the API cannot be asked."""
    number, token, repo = pull_number(), env("INPUT_TOKEN"), env("GITHUB_REPOSITORY")
    if live and number is not None and token and repo:
        api = env("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        try:
            live = github_api(
                "GET", f"{api}/repos/{repo}/issues/{number}/labels?per_page=100", token
            )
            return [label.get("name", "") for label in live]
        except (urllib.error.URLError, OSError, ValueError, TypeError, AttributeError) as e:
            reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(e)
            print(
                f"memcheck: the pull request's labels were not read ({reason}); using those of the event"
            )
    path = env("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return []
    event = json.loads(Path(path).read_text(encoding="utf-8"))
    return [label.get("name", "") for label in (event.get("pull_request") or {}).get("labels", [])]


def pull_number() -> int | None:
    path = env("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return None
    pr = json.loads(Path(path).read_text(encoding="utf-8")).get("pull_request")
    return int(pr["number"]) if pr and "number" in pr else None


def over_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for t in results.get("tests") or []:
        if not t.get("failed"):
            continue
        measured, limits = t.get("measured") or {}, t.get("limits") or {}
        over = [
            f"{m} {size(measured.get(m))}, limit {size(limits[m])}"
            for m in ("peak", "retained", "cycles")
            if m in limits and (measured.get(m) or 0) > limits[m]
        ]
        # Metric names and sizes: made here, plain text; the node id is the results file's.
        rows.append(f"| {markdown(t.get('nodeid', ''))} | {'; '.join(over)} |")
    return rows


def report(
    passed: bool,
    totals: dict[str, int],
    results: dict[str, Any] | None,
    changes: dict[str, Any] | None,
    ref: str,
    approval: str,
    results_name: str = "memcheck-results.json",
) -> str:
    """The Markdown of the step summary and of the pull request comment."""
    mark = "✅ passed" if passed else "❌ failed"
    lines = [f"### Memory gate {mark}", ""]
    if results is not None:
        lines.append(
            f"{totals['measured']} tests measured, {totals['gated']} gated against a baseline or "
            f"limit: {totals['over']} over budget, {totals['new']} new (no baseline yet)."
        )
        rows = over_rows(results)
        if rows:
            lines += ["", "| over budget | measured |", "|---|---|", *rows[:50]]
            if len(rows) > 50:
                lines.append(f"\n… and {len(rows) - 50} more: see the results artifact.")
            lines += [
                "",
                "If the growth is intended, accept it: download the results artifact, run "
                f"`memcheck update --from {results_name}` and commit the baselines; they "
                "then show here as raised, for review.",
            ]
    else:
        lines.append("No results were written: see the log of the gate step.")
    lines.append("")
    if changes is None:
        lines.append("Baselines were not compared with a base revision (no pull request).")
    else:
        c = changes["counts"]
        lines.append(
            f"#### Baseline changes against {code(ref)}: {c['raised']} raised, "
            f"{c['new']} new, {c['lowered']} lowered, {c['removed']} removed"
        )
        lines.append("")
        if c.get("settings_raised"):
            # Each counted in settings_raised: a loosened setting, a baseline file moved to
            # another environment, a test module whose memory markers changed.
            raised = [
                f"{markdown(s['setting'])} {markdown(s['old'])} → {markdown(s['new'])}"
                for s in changes.get("settings", [])
                if s["raised"]
            ]
            raised += [
                f"the environment of {markdown(e['module'])} ({markdown(e['new'])})"
                for e in changes.get("environments", [])
            ]
            raised += [
                f"the memory markers of {markdown(m['module'])}" for m in changes.get("markers", [])
            ]
            lines.append(
                "**Raised settings** may let tests use more memory from now on: "
                + "; ".join(raised)
                + ". Review them like code."
            )
            lines.append("")
        if c["raised"]:
            lines.append(
                "**Raised** baselines let these tests use more memory from now on: their limits "
                "rose to the sizes shown. Review them like code."
            )
            lines.append("")
        if any(c.values()):
            lines.append(changes["markdown"].rstrip("\n"))
        else:
            lines.append("No baseline changed.")
    if approval:
        lines += ["", approval]
    return "\n".join(lines) + "\n"


def github_api(method: str, url: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "pytest-memcheck-action",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the API's URL)
        return json.loads(response.read() or b"null")


def upsert_comment(body: str) -> str | None:
    """Create the pull request's memcheck comment, or edit the one that carries our marker.
    Returns its URL; a token that cannot write (a fork's pull request) gets a warning."""
    number, token = pull_number(), env("INPUT_TOKEN")
    repo = env("GITHUB_REPOSITORY")
    if number is None or not token or not repo:
        return None
    api = env("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    key = re.sub(r"[^A-Za-z0-9._-]", "_", env("INPUT_COMMENT_KEY").strip())
    marker = MARKER.format(key=f" {key}" if key else "")
    body = f"{marker}\n{body}"
    issue = f"{api}/repos/{repo}/issues/{number}/comments"
    try:
        existing = None
        page = 1
        while existing is None:
            batch = github_api("GET", f"{issue}?per_page=100&page={page}", token)
            existing = next(
                (c for c in batch if marker in (c.get("body") or "").splitlines()[:1]), None
            )
            if len(batch) < 100:
                break
            page += 1
        if existing is not None:
            try:
                return github_api("PATCH", existing["url"], token, {"body": body})["html_url"]
            except urllib.error.HTTPError as e:
                if e.code not in (403, 404):
                    raise
                # Someone else's comment with our marker: not ours to edit; ours is new.
        return github_api("POST", issue, token, {"body": body})["html_url"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
        reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(e)
        command(
            "warning",
            f"the pull request comment was not written ({reason}); the step summary has the "
            "same report. The job needs `permissions: pull-requests: write`; pull requests from "
            "forks get a read-only token (set `comment: false` there)",
        )
        return None


def step_review() -> None:
    cwd = workdir()
    ref = env("INPUT_REF").strip()
    results_path = Path(env("MEMCHECK_RESULTS") or cwd / "memcheck-results.json")
    results = (
        json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    )
    totals = counts(results or {})
    exit_code = int(env("MEMCHECK_EXIT_CODE") or "0")
    changes = baseline_changes(cwd, ref)
    # A baseline removed while its test still runs un-gates that test: a raise without a limit.
    measured = {t.get("nodeid") for t in (results or {}).get("tests") or []}
    ungated = [
        c["test"]
        for c in (changes or {}).get("changes", [])
        if c["kind"] == "removed" and c["test"] in measured
    ]
    # A loosened gate setting (tolerance, floor...) raises every limit at once: one raise each.
    settings_raised = (changes or {}).get("counts", {}).get("settings_raised", 0)
    raised = (changes["counts"]["raised"] if changes else 0) + settings_raised + len(ungated)
    label = env("INPUT_APPROVAL_LABEL", "memcheck-approved").strip()
    required = flag("INPUT_REQUIRE_APPROVAL")
    approved = flag("INPUT_APPROVED") or (bool(label) and label in labels(required and raised > 0))
    missing = required and raised > 0 and not approved
    approval = ""
    if ungated:
        approval = (
            f"**Removed while the test still runs** ({plural(len(ungated), 'test')} no longer "
            "gated, counted as raised): " + ", ".join(markdown(t) for t in ungated[:20])
        ) + (f" and {len(ungated) - 20} more" if len(ungated) > 20 else "")
    if raised and required:
        approval += "\n\n" if approval else ""
        approval += (
            f"**Approval:** {plural(raised, 'raised baseline')} approved"
            + (f" (label {code(label)})." if not flag("INPUT_APPROVED") else " (input).")
            if approved
            else f"**Approval required** for {plural(raised, 'raised baseline')}: the label "
            f"{code(label)} on this pull request, added by a maintainer after review."
        )
    passed = exit_code == 0 and not missing
    body = report(passed, totals, results, changes, ref, approval, results_path.name)
    append_summary(body)
    url = upsert_comment(body) if flag("INPUT_COMMENT") else None
    set_outputs(raised=raised, approved=approved, comment=url or "")
    problems = []
    if exit_code != 0:
        problems.append(
            f"pytest exited {exit_code}: "
            + (
                f"{totals['failed']} tests over their memory limits (the step summary lists "
                "them; if the growth is intended, accept it with `memcheck update --from` the "
                "results artifact and commit the baselines)"
                if totals["failed"]
                else "see the log of the gate step"
            )
        )
    if missing:
        problems.append(
            f"approval needed for {plural(raised, 'raised baseline')} against {ref}, and the pull "
            f"request has no label '{label}'. A maintainer reviews the raised "
            f"limits in the step summary or the pull request comment and adds the label "
            f"'{label}' (the workflow must run on `pull_request` types including `labeled`), "
            "or the pull request lowers them back"
        )
    for problem in problems:
        command("error", problem)
    if problems:
        sys.exit(1)


STEPS = {
    "install-key": step_install_key,
    "install": step_install,
    "base": step_base,
    "gate": step_gate,
    "review": step_review,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in STEPS:
        print(f"usage: memcheck_action.py {{{'|'.join(STEPS)}}}", file=sys.stderr)
        return 2
    STEPS[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
