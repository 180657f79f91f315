"""The pull-request flow of the composite action, end to end on real git repositories.

The action's steps are scripts (`.github/actions/memcheck/memcheck_action.py`): here they run as
the runner would run them, with `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY` and `GITHUB_EVENT_PATH` in
temporary files and `GITHUB_API_URL` pointing at a stand-in for the GitHub API (a subprocess that
keeps the pull request's comments in a JSON file).

The scenario: `main` commits baselines; pull request A raises one test and commits the accepted
baseline (the gate passes, the raise is listed for review); pull request B regresses without a
baseline change (the gate fails); with `require-approval`, A fails until it carries the label.
Each pull request is a shallow single-branch clone, as actions/checkout makes it, so the base
branch must really be fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".github" / "actions" / "memcheck" / "memcheck_action.py"
TOKEN = "ghs_not-a-real-token-0123456789"
PLAIN = "-p no:randomly -p no:cacheprovider -p no:memray"
# The allocation happens here, in the project but outside the test file: the annotation points
# at this line (5), and names the test's.
SIZES = "ALLOC = {}\n\n\ndef make():\n    return bytearray(ALLOC)\n"

SUITE = """
from sizes import ALLOC, make


def test_alloc():
    data = make()
    assert len(data) == ALLOC


def test_small():
    assert bytearray(1000)


def test_slow():
    raise AssertionError("deselected by -k 'not slow': running it means the arguments were split")
"""

# A stand-in for the GitHub API's issue comments: GET (list), POST (create), PATCH (edit).
FAKE_API = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

state_path = sys.argv[1]
state = {"comments": [], "requests": [], "deny": "--deny" in sys.argv}

class API(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        state["requests"].append(
            {"method": method, "path": self.path, "auth": self.headers.get("Authorization")}
        )
        base = f"http://127.0.0.1:{self.server.server_port}"
        if state["deny"] and method != "GET":
            self.reply(403, {"message": "Resource not accessible by integration"})
        elif method == "GET" and self.path.startswith("/repos/o/r/issues/7/comments"):
            self.reply(200, state["comments"])
        elif method == "GET" and self.path.startswith("/repos/o/r/issues/7/labels"):
            # the labels as they are now, when a test sets them (else as an API that denies)
            try:
                with open(state_path + ".labels") as f:
                    self.reply(200, [{"name": n} for n in json.load(f)])
            except FileNotFoundError:
                self.reply(404, {"message": "Not Found"})
        elif method == "POST" and self.path == "/repos/o/r/issues/7/comments":
            n = len(state["comments"]) + 1
            comment = {
                "id": n,
                "url": f"{base}/repos/o/r/issues/comments/{n}",
                "html_url": f"https://github.example/o/r/pull/7#issuecomment-{n}",
                "body": body["body"],
            }
            state["comments"].append(comment)
            self.reply(201, comment)
        elif method == "PATCH" and self.path.startswith("/repos/o/r/issues/comments/"):
            n = int(self.path.rsplit("/", 1)[1])
            state["comments"][n - 1]["body"] = body["body"]
            self.reply(200, state["comments"][n - 1])
        else:
            self.reply(404, {"message": "Not Found"})
        with open(state_path, "w") as f:
            json.dump(state, f)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

server = HTTPServer(("127.0.0.1", 0), API)
print(server.server_port, flush=True)
server.serve_forever()
"""


def pytest_in(app: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", *PLAIN.split(), *args],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT in the delimiter form: name<<DELIM, value lines, DELIM."""
    found, lines = {}, path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        name, delimiter = lines[i].split("<<", 1)
        end = lines.index(delimiter, i + 1)
        found[name] = "\n".join(lines[i + 1 : end])
        i = end + 1
    return found


class Origin:
    """A bare repository standing in for GitHub: main with baselines, and pull request branches.
    The project lives in `app/`, the action's `working-directory`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bare = tmp / "origin.git"
        self.dev = tmp / "dev"
        app = self.dev / "app"
        app.mkdir(parents=True)
        (app / "pyproject.toml").write_text('[tool.memcheck]\nbaseline-dir = "baselines"\n')
        (app / "sizes.py").write_text(SIZES.format("1 << 20"))
        (app / "test_suite.py").write_text(SUITE)
        git(self.dev, "init", "-q", "-b", "main")
        recorded = pytest_in(app, "--memcheck-update", "-k", "not slow")
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        git(self.dev, "add", "-A")
        git(self.dev, "commit", "-q", "-m", "baselines")
        git(tmp, "clone", "-q", "--bare", str(self.dev), str(self.bare))
        git(self.dev, "remote", "add", "origin", self.bare.as_uri())

    def pull_request(self, name: str, alloc: str, accept: bool) -> None:
        """A branch that changes test_alloc's size, with its baseline accepted or not."""
        app = self.dev / "app"
        git(self.dev, "checkout", "-q", "-b", name, "main")
        (app / "sizes.py").write_text(SIZES.format(alloc))
        if accept:
            recorded = pytest_in(app, "--memcheck-update", "-k", "not slow")
            assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        git(self.dev, "commit", "-q", "-am", name)
        git(self.dev, "push", "-q", "origin", name)
        git(self.dev, "checkout", "-q", "main")

    def checkout(self, name: str) -> Path:
        """The pull request as actions/checkout leaves it: shallow, one branch, no base."""
        work = self.tmp / f"work-{name}"
        git(self.tmp, "clone", "-q", "--depth=1", "--single-branch", "--branch", name,
            self.bare.as_uri(), str(work))  # fmt: skip
        return work


class Runner:
    """The runner's side of one job: its files, its environment, and the action's steps."""

    def __init__(self, tmp: Path, workspace: Path, api: str, **inputs: str) -> None:
        self.tmp = tmp
        self.workspace = workspace
        self.summary = tmp / f"summary-{workspace.name}.md"
        self.event = tmp / f"event-{workspace.name}.json"
        self.event.write_text(json.dumps({"pull_request": {"number": 7, "labels": []}}))
        self.outputs: dict[str, dict[str, str]] = {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))},
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_EVENT_PATH": str(self.event),
            "GITHUB_BASE_REF": "main",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_API_URL": api,
            "GITHUB_SERVER_URL": "https://github.example",
            "INPUT_TOKEN": TOKEN,
            "INPUT_PYTHON": sys.executable,
            "INPUT_WORKING_DIRECTORY": "app",
            "INPUT_PYTEST_ARGS": f'{PLAIN} -k "not slow"',
            "INPUT_COMMENT": "true",
            "INPUT_APPROVAL_LABEL": "memcheck-approved",
            **inputs,
        }

    def label(self, *names: str) -> None:
        labels = [{"name": n} for n in names]
        self.event.write_text(json.dumps({"pull_request": {"number": 7, "labels": labels}}))

    def step(self, name: str, **env: str) -> subprocess.CompletedProcess:
        out = self.tmp / f"output-{self.workspace.name}-{name}"
        out.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, str(SCRIPT), name],
            cwd=self.workspace,
            env={**self.env, "GITHUB_OUTPUT": str(out), **env},
            capture_output=True,
            text=True,
            check=False,
        )
        self.outputs[name] = outputs(out)
        assert "Traceback" not in result.stderr, result.stderr
        written = out.read_text() if out.exists() else ""
        assert TOKEN not in result.stdout + result.stderr + written
        return result

    def job(self) -> subprocess.CompletedProcess:
        """base, gate, review, wired as action.yml wires them."""
        base = self.step("base")
        assert base.returncode == 0, base.stdout + base.stderr
        gate = self.step("gate")
        assert gate.returncode == 0, gate.stdout + gate.stderr  # the verdict is review's
        self.gate_output = gate.stdout
        return self.review()

    def review(self) -> subprocess.CompletedProcess:
        gate = self.outputs["gate"]
        return self.step(
            "review",
            INPUT_REF=self.outputs["base"]["ref"],
            MEMCHECK_RESULTS=gate["results"],
            MEMCHECK_EXIT_CODE=gate["exit-code"],
        )


@pytest.fixture
def api(tmp_path):
    """The fake GitHub API: its URL, and a reader of its state."""
    state = tmp_path / "api.json"
    server = subprocess.Popen(
        [sys.executable, "-c", FAKE_API, str(state)], stdout=subprocess.PIPE, text=True
    )
    port = server.stdout.readline().strip()
    yield f"http://127.0.0.1:{port}", lambda: json.loads(state.read_text())
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def origin(tmp_path):
    origin = Origin(tmp_path)
    origin.pull_request("raise", "2 << 20", accept=True)
    origin.pull_request("regress", "2 << 20", accept=False)
    return origin


def test_a_reviewed_raise_passes_and_is_listed_for_review(origin, api, tmp_path):
    url, state = api
    work = origin.checkout("raise")
    # Negative control: a shallow single-branch checkout has no base branch to compare with...
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "origin/main"], cwd=work,
                          capture_output=True, check=False).returncode != 0  # fmt: skip
    runner = Runner(tmp_path, work, url)
    review = runner.job()
    assert review.returncode == 0, review.stdout + review.stderr
    # ...the base step fetched it, with the token in git's environment only.
    assert runner.outputs["base"] == {"ref": "origin/main"}
    assert (
        git(work, "rev-parse", "origin/main").strip()
        == git(origin.bare, "rev-parse", "main").strip()
    )
    assert TOKEN not in (work / ".git" / "config").read_text()
    gate = runner.outputs["gate"]
    assert gate["exit-code"] == "0"
    assert (gate["measured"], gate["gated"], gate["over"], gate["new"], gate["failed"]) == (
        "2", "2", "0", "0", "0",
    )  # fmt: skip
    assert Path(gate["results"]) == work / "app" / "memcheck-results.json"
    assert runner.outputs["review"]["raised"] == "1"
    summary = runner.summary.read_text()
    assert "### Memory gate ✅ passed" in summary
    assert "1 raised, 0 new, 0 lowered, 0 removed" in summary
    row = next(line for line in summary.splitlines() if "test\\_alloc" in line and "raised" in line)
    assert "1.00 MiB → 2.00 MiB (+1.00 MiB +100.0%)" in row
    assert "1.16 MiB → 2.26 MiB" in row  # the peak limit, at the default 10 % + 64 KiB
    # One comment, found again by its marker and edited, never duplicated.
    comments = state()["comments"]
    assert len(comments) == 1
    assert comments[0]["body"].startswith("<!-- pytest-memcheck -->\n### Memory gate ✅ passed")
    assert "1.00 MiB → 2.00 MiB" in comments[0]["body"]
    assert runner.outputs["review"]["comment"].endswith("#issuecomment-1")
    assert runner.review().returncode == 0
    methods = [r["method"] for r in state()["requests"]]
    assert methods == ["GET", "POST", "GET", "PATCH"], methods
    assert len(state()["comments"]) == 1
    assert {r["auth"] for r in state()["requests"]} == {f"Bearer {TOKEN}"}
    # The fix matters: judged against the base branch's baselines (the old action), it fails.
    old = pytest_in(work / "app", "--memcheck", "--memcheck-ref=origin/main", "-k", "not slow")
    assert old.returncode == 1, old.stdout


def test_a_regression_without_a_baseline_change_fails(origin, api, tmp_path):
    url, state = api
    work = origin.checkout("regress")
    runner = Runner(tmp_path, work, url)
    review = runner.job()
    assert review.returncode == 1
    gate = runner.outputs["gate"]
    assert (gate["exit-code"], gate["over"], gate["failed"]) == ("1", "1", "1")
    assert runner.outputs["review"]["raised"] == "0"
    assert "::error title=memcheck::pytest exited 1: 1 tests over their memory limits" in (
        review.stdout
    )
    # The plugin's annotation points at the allocation site (sizes.py, in the project), with
    # paths from the repository's root (the project is in app/), and names the test's line.
    errors = [line for line in runner.gate_output.splitlines() if line.startswith("::error")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("::error file=app/sizes.py,line=5,title=memcheck%3A "), errors
    assert errors[0].endswith("%0A  the test: app/test_suite.py:5"), errors
    # The results file and `memcheck check` carry the diagnosis the report showed.
    results = json.loads(Path(gate["results"]).read_text())
    (failing,) = [t for t in results["tests"] if t["failed"]]
    assert failing["site"] == {"path": "sizes.py", "line": 5}
    assert "confirmed by a second measurement" in failing["message"]
    assert "allocated at the peak, by site:\n    sizes.py:5 in make: 2.0 MiB" in failing["message"]
    check = subprocess.run(
        [sys.executable, "-m", "pytest_memcheck.cli", "check", "--from", gate["results"]],
        cwd=work / "app", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 1
    assert "sizes.py:5 in make: 2.0 MiB" in check.stdout, check.stdout
    body = state()["comments"][0]["body"]
    assert "### Memory gate ❌ failed" in body and "No baseline changed." in body
    assert "| test\\_suite.py::test\\_alloc | peak 2.00 MiB, limit 1.16 MiB |" in body, body


def test_raises_can_require_an_approval_label(origin, api, tmp_path):
    url, state = api
    work = origin.checkout("raise")
    runner = Runner(tmp_path, work, url, INPUT_REQUIRE_APPROVAL="true")
    review = runner.job()
    assert review.returncode == 1
    assert runner.outputs["gate"]["exit-code"] == "0"  # the gate itself passed
    assert runner.outputs["review"]["approved"] == "false"
    assert (
        "approval needed for 1 raised baseline against origin/main, and the pull request has no "
        "label 'memcheck-approved'" in review.stdout
    )
    assert "adds the label 'memcheck-approved'" in review.stdout
    assert (
        "**Approval required** for 1 raised baseline: the label `memcheck-approved`"
        in (state()["comments"][0]["body"])
    )
    runner.label("memcheck-approved")
    approved = runner.review()
    assert approved.returncode == 0, approved.stdout
    assert runner.outputs["review"]["approved"] == "true"
    assert "(label `memcheck-approved`)" in state()["comments"][0]["body"]
    # Another label approves nothing; the input approves without one.
    runner.label("documentation")
    assert runner.review().returncode == 1
    # A re-run judges by the labels as they are now, not as the event's payload had them.
    live = tmp_path / "api.json.labels"
    live.write_text(json.dumps(["memcheck-approved"]))
    assert runner.review().returncode == 0  # the payload still says "documentation"
    runner.label("memcheck-approved")
    live.write_text(json.dumps(["documentation"]))  # removed since the run started
    rerun = runner.review()
    assert rerun.returncode == 1, rerun.stdout
    live.unlink()
    assert runner.step("review", INPUT_APPROVED="true", INPUT_REF="origin/main",
                       MEMCHECK_RESULTS=runner.outputs["gate"]["results"],
                       MEMCHECK_EXIT_CODE="0").returncode == 0  # fmt: skip


def test_a_baseline_removed_while_its_test_runs_counts_as_raised(origin, api, tmp_path):
    """Deleting a baseline un-gates its test (it becomes `new`, which passes): a raise with no
    limit at all, so it needs the approval like any raise."""
    url, state = api
    baselines = origin.dev / "app" / "baselines" / "test_suite.toml"
    git(origin.dev, "checkout", "-q", "-b", "unbaseline", "main")
    text = baselines.read_text()
    start = text.index("[test_alloc]")
    baselines.write_text(text[:start] + text[text.index("[test_small]") :])
    git(origin.dev, "commit", "-q", "-am", "drop a baseline")
    git(origin.dev, "push", "-q", "origin", "unbaseline")
    runner = Runner(tmp_path, origin.checkout("unbaseline"), url, INPUT_REQUIRE_APPROVAL="true")
    review = runner.job()
    assert runner.outputs["gate"]["exit-code"] == "0"
    assert runner.outputs["gate"]["new"] == "1"  # the gate alone would let it through
    assert review.returncode == 1
    assert runner.outputs["review"]["raised"] == "1"
    assert "approval needed for 1 raised baseline against origin/main" in review.stdout
    body = state()["comments"][0]["body"]
    assert "0 raised, 0 new, 0 lowered, 1 removed" in body
    assert "**Removed while the test still runs** (1 test no longer gated" in body
    assert "test\\_suite.py::test\\_alloc" in body
    # Negative control: without require-approval it is listed, and passes.
    runner.env["INPUT_REQUIRE_APPROVAL"] = "false"
    assert runner.review().returncode == 0


def test_a_raised_tolerance_counts_as_raised_though_no_baseline_changed(origin, api, tmp_path):
    """Raising the tolerance raises every limit with no baseline changed: it needs the approval
    like a raised baseline, and the review says which setting rose."""
    url, state = api
    pyproject = origin.dev / "app" / "pyproject.toml"
    for branch, tolerance in (("loosen", "300%"), ("tighten", "5%")):
        git(origin.dev, "checkout", "-q", "-b", branch, "main")
        pyproject.write_text(
            f'[tool.memcheck]\nbaseline-dir = "baselines"\ntolerance = "{tolerance}"\n'
        )
        git(origin.dev, "commit", "-q", "-am", branch)
        git(origin.dev, "push", "-q", "origin", branch)
        git(origin.dev, "checkout", "-q", "main")
    runner = Runner(tmp_path, origin.checkout("loosen"), url, INPUT_REQUIRE_APPROVAL="true")
    review = runner.job()
    assert runner.outputs["gate"]["exit-code"] == "0"
    assert review.returncode == 1, review.stdout
    assert runner.outputs["review"]["raised"] == "1"
    assert "approval needed for 1 raised baseline against origin/main" in review.stdout
    body = state()["comments"][0]["body"]
    assert (
        "**Raised settings** may let tests use more memory from now on: tolerance 10% → 300%"
        in body
    )
    assert "setting tolerance: 10% → 300% (raised: every limit rises with it)" in body
    # Negative control: a tightened tolerance is listed, and needs no approval.
    runner = Runner(tmp_path, origin.checkout("tighten"), url, INPUT_REQUIRE_APPROVAL="true")
    review = runner.job()
    assert review.returncode == 0, review.stdout
    assert runner.outputs["review"]["raised"] == "0"


def test_a_loosened_marker_counts_as_raised_though_no_baseline_changed(origin, api, tmp_path):
    """A marker's limit replaces the baseline's: raising it (or adding skip=True) loosens the
    gate with no baseline changed, so the review lists it and it needs the approval."""
    url, state = api
    suite = origin.dev / "app" / "test_suite.py"
    marked = SUITE.replace("def test_small", '@pytest.mark.memcheck(peak="4 KiB")\ndef test_small')
    git(origin.dev, "checkout", "-q", "-b", "marked", "main")
    suite.write_text("import pytest\n" + marked)
    git(origin.dev, "commit", "-q", "-am", "marked")
    git(origin.dev, "push", "-q", "origin", "marked")
    git(origin.dev, "checkout", "-q", "-b", "loosen-marker", "marked")
    suite.write_text("import pytest\n" + marked.replace("4 KiB", "4 GiB"))
    git(origin.dev, "commit", "-q", "-am", "loosen-marker")
    git(origin.dev, "push", "-q", "origin", "loosen-marker")
    git(origin.dev, "checkout", "-q", "main")
    runner = Runner(tmp_path, origin.checkout("loosen-marker"), url, INPUT_REQUIRE_APPROVAL="true",
                    GITHUB_BASE_REF="marked")  # fmt: skip
    review = runner.job()
    assert runner.outputs["gate"]["exit-code"] == "0"
    assert review.returncode == 1, review.stdout
    assert runner.outputs["review"]["raised"] == "1"
    body = state()["comments"][0]["body"]
    assert "the memory markers of test\\_suite.py" in body, body
    assert (
        'markers of test\\_suite.py: − @pytest.mark.memcheck(peak="4 KiB"), '
        '+ @pytest.mark.memcheck(peak="4 GiB")' in body
    ), body
    # Negative control: the same pull request without the marker change needs no approval.
    runner = Runner(tmp_path, origin.checkout("marked"), url, INPUT_REQUIRE_APPROVAL="true",
                    GITHUB_BASE_REF="marked")  # fmt: skip
    review = runner.job()
    assert review.returncode == 0, review.stdout
    assert runner.outputs["review"]["raised"] == "0"


def test_a_comment_the_token_may_not_write_is_a_warning(origin, tmp_path):
    state = tmp_path / "api.json"
    server = subprocess.Popen(
        [sys.executable, "-c", FAKE_API, str(state), "--deny"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        runner = Runner(tmp_path, origin.checkout("raise"), url)
        review = runner.job()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert review.returncode == 0, review.stdout
    assert "::warning title=memcheck::the pull request comment was not written (HTTP 403)" in (
        review.stdout
    )
    assert "pull-requests: write" in review.stdout
    assert "### Memory gate ✅ passed" in runner.summary.read_text()


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    return subprocess.run(
        [sys.executable, "-c", *args], env={**clean, **env}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def test_pytest_args_are_split_like_a_shell_line_never_on_whitespace():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import memcheck_action as a; "
        "print(repr(a.pytest_args()))"
    )
    folder = str(SCRIPT.parent)
    cases = {
        'tests -k "not slow" -n 2': ["tests", "-k", "not slow", "-n", "2"],
        "-k\n'a or b'\n--tb=short": ["-k", "a or b", "--tb=short"],
        "": [],
    }
    for text, expected in cases.items():
        result = run_script(code, folder, INPUT_PYTEST_ARGS=text)
        assert result.stdout.strip() == repr(expected), (text, result.stderr)
    # Negative control: a whitespace split would have broken the quoted expression.
    assert 'tests -k "not slow"'.split() != ["tests", "-k", "not slow"]
    bad = run_script(code, folder, INPUT_PYTEST_ARGS='-k "not slow')
    assert bad.returncode == 1
    assert "pytest-args could not be split (No closing quotation): nothing was run" in bad.stdout


def test_the_token_goes_to_git_through_its_environment_for_the_server_only():
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import memcheck_action as a; "
        "print(json.dumps(a.git_auth_env(sys.argv[2], 'https://github.com')))"
    )
    result = run_script(code, str(SCRIPT.parent), TOKEN)
    config = json.loads(result.stdout)
    assert config["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    assert config["GIT_CONFIG_VALUE_0"].startswith("AUTHORIZATION: basic ")
    assert TOKEN not in config["GIT_CONFIG_VALUE_0"]  # base64 of x-access-token:TOKEN


def test_a_base_branch_that_cannot_be_fetched_says_what_to_do(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    git(work, "remote", "add", "origin", (tmp_path / "nowhere.git").as_uri())
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "base"],
        cwd=work,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))},
            "GITHUB_WORKSPACE": str(work),
            "GITHUB_BASE_REF": "main",
            "GITHUB_OUTPUT": str(out),
            "INPUT_TOKEN": TOKEN,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "could not fetch the base branch 'main'" in result.stdout
    assert "permissions: contents: read" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert not out.exists() or "ref" not in outputs(out)


STUB_PYTHON = """#!/bin/sh
# Stands in for the job's interpreter: logs its arguments; answers the interpreter tag query.
echo "$*" >> "$STUB_LOG"
if [ "$1" = "-c" ]; then echo "cpython-311 linux-x86_64"; fi
"""


@pytest.fixture
def action_copy(tmp_path):
    """The action's script in a copy of the project's layout, with a stub interpreter."""
    root = tmp_path / "action"
    (root / ".github" / "actions" / "memcheck").mkdir(parents=True)
    shutil.copy(SCRIPT, root / ".github" / "actions" / "memcheck")
    (root / "pyproject.toml").write_text('[project]\nname = "pytest-memcheck"\nversion = "9.8.7"\n')
    (root / "src").mkdir()
    (root / "src" / "lib.rs").write_text("// v1\n")
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    return root, stub


def install_step(root, stub, tmp_path, step, **inputs):
    out = tmp_path / f"out-{step}"
    out.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, str(root / ".github" / "actions" / "memcheck" / SCRIPT.name), step],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))},
            "GITHUB_OUTPUT": str(out),
            "INPUT_PYTHON": str(stub),
            "MEMCHECK_WHEELS": str(tmp_path / "wheels"),
            "STUB_LOG": str(tmp_path / "log"),
            **inputs,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    return result, outputs(out)


def test_install_from_a_cached_wheel_keyed_by_version_or_source(action_copy, tmp_path):
    root, stub = action_copy
    log = tmp_path / "log"
    _, key = install_step(root, stub, tmp_path, "install-key", INPUT_INSTALL="pypi")
    assert key == {
        "key": "pytest-memcheck-pypi-9.8.7-cpython-311-linux-x86_64",
        "path": str(tmp_path / "wheels" / "pypi"),
    }
    # An empty cache: the wheel of this action's version is downloaded, binary only...
    result, _ = install_step(root, stub, tmp_path, "install", INPUT_INSTALL="pypi")
    assert "-m pip download --no-deps --only-binary :all: -d" in log.read_text()
    assert "pytest-memcheck==9.8.7" in log.read_text()
    # ...and a stub pip that leaves no wheel is an error, not a silent pass.
    assert result.returncode == 1
    assert "left no pytest-memcheck wheel" in result.stdout
    # A restored cache: installed from the wheel there, nothing downloaded.
    wheel = tmp_path / "wheels" / "pypi" / "pytest_memcheck-9.8.7-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    log.unlink()
    result, _ = install_step(root, stub, tmp_path, "install", INPUT_INSTALL="pypi")
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().splitlines() == [f"-m pip install {wheel}"]
    # From source: the key follows the source, so a changed engine is built again.
    _, first = install_step(root, stub, tmp_path, "install-key", INPUT_INSTALL="source")
    _, same = install_step(root, stub, tmp_path, "install-key", INPUT_INSTALL="source")
    (root / "src" / "lib.rs").write_text("// v2\n")
    _, changed = install_step(root, stub, tmp_path, "install-key", INPUT_INSTALL="source")
    assert first == same and first["key"] != changed["key"]
    assert first["key"].startswith("pytest-memcheck-source-")
    log.unlink()
    install_step(root, stub, tmp_path, "install", INPUT_INSTALL="source")
    assert f"-m pip wheel --no-deps -w {tmp_path / 'wheels' / 'source'} {root}" in log.read_text()
    # Nothing to install by default; an unknown mode says what it accepts.
    before = log.read_text()
    result, _ = install_step(root, stub, tmp_path, "install")
    assert result.returncode == 0 and log.read_text() == before
    result, _ = install_step(root, stub, tmp_path, "install", INPUT_INSTALL="conda")
    assert result.returncode == 1
    assert "install: 'conda' is not one of none, pypi, source: nothing was installed" in (
        result.stdout
    )


LEAKY_HELPERS = """
import os

REGISTRY = []


class Record:
    def __init__(self, i):
        self.blob = bytearray(1000)


def register(i):
    if os.environ.get("LEAK"):
        REGISTRY.append(Record(i))
"""


def test_results_and_check_carry_the_diagnosis_and_annotate_the_site(project, monkeypatch):
    project.pytester.makepyfile(
        helpers=LEAKY_HELPERS,
        test_leaky="from helpers import register\n\n\ndef test_registers():\n"
        "    for i in range(300):\n        register(i)\n",
    )
    monkeypatch.setenv("PYTHONPATH", str(project.path))
    assert project.run("--memcheck-update").ret == 0
    # Negative control: a passing test has no message and no site.
    assert project.run("--memcheck", "--memcheck-json=ok.json").ret == 0
    (ok,) = json.loads((project.path / "ok.json").read_text())["tests"]
    assert ok["message"] == "" and "site" not in ok
    monkeypatch.setenv("LEAK", "1")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(project.path.parent))
    result = project.run("--memcheck", "--memcheck-json=r.json")
    assert result.ret == 1
    (t,) = json.loads((project.path / "r.json").read_text())["tests"]
    assert t["site"] == {"path": "helpers.py", "line": 8}  # self.blob = bytearray(1000)
    assert "retained, by site:\n    helpers.py:8 in __init__:" in t["message"]
    assert "held by: helpers.REGISTRY -> list -> helpers.Record" in t["message"]
    # The annotation: at the leaking line, its path from the workspace (one folder up here).
    (annotation,) = [line for line in result.stdout.lines if line.startswith("::error")]
    prefix = project.path.name
    assert annotation.startswith(f"::error file={prefix}/helpers.py,line=8,"), annotation
    assert f"%0A  the test: {prefix}/test_leaky.py:4" in annotation
    assert "held by: helpers.REGISTRY -> list -> helpers.Record" in annotation
    check = subprocess.run(
        [sys.executable, "-m", "pytest_memcheck.cli", "check", "--from", "r.json"],
        cwd=project.path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 1
    assert "held by: helpers.REGISTRY -> list -> helpers.Record" in check.stdout
    assert "helpers.py:8 in __init__:" in check.stdout
