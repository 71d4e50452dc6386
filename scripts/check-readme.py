#!/usr/bin/env python3
"""Runs the README's snippets as written, against the quickstart, so the README cannot
drift from what works (issue 20). Part of the test command (scripts/test.sh).

What it does, in a throwaway copy of the repository (the files git knows, committed or
not), so a quickstart of yours and its `.state/local` are left alone:

1. links the binaries under test into the copy's `target/release/` (from
   DAYSHIFT_BIN_DIR: the test build's `target/debug` in scripts/test.sh; default
   `target/release`) and runs every ```sh block of README.md, in order, in ONE bash
   session from the copy's root (so `export PATH=…` and `KEY=…` carry over), with
   `set -euo pipefail`; ```python blocks run with python3 from the same folder; each
   `$ command` of a ```console block runs and its output must equal the lines below it;
2. a block preceded by `<!-- readme-check: background … -->` (the quickstart) is started
   in its own process group with DAYSHIFT_PREBUILT=1 (the quickstart then uses the linked
   binaries instead of a second, release build); the check waits until it serves, and at
   the end sends it SIGINT, as Ctrl-C would, and waits for it to exit;
   `<!-- readme-check: skip … -->` blocks are not run (the test command itself);
   `<!-- readme-check: after-stop … -->` blocks run after the quickstart has stopped;
3. fails when a snippet fails, when the quickstart does not come up, or when a process
   started from the copy is still running at the end (those are killed and named).

When port 8443 is taken, the copy's examples/local/dayshift.toml and the snippets get
another free port, as the README's "Port 8443 taken?" advice says.

Usage: python3 scripts/check-readme.py [README.md]
Env: DAYSHIFT_BIN_DIR (binaries to test), DAYSHIFT_CACHE (model cache, default
~/.cache/dayshift as scripts/deps/smollm2.sh), README_CHECK_KEEP=1 (keep the copy).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 8443
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARKER = re.compile(r"<!--\s*readme-check:\s*([\w-]+)")


def blocks(text):
    """(kind, marker, first line number, code) for each fenced block of `text`."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i + 1
        marker = None
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0:
            mm = MARKER.search(lines[k])
            marker = mm.group(1) if mm else None
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        out.append((lang, marker, start, "\n".join(body)))
        i += 1
    return out


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repo(dest):
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        src = ROOT / os.fsdecode(f)
        if not src.is_file():
            continue
        dst = dest / os.fsdecode(f)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def heredoc(text, tag):
    assert tag not in text
    return f"<<'{tag}'\n{text}\n{tag}\n"


def script_for(readme_blocks, repo, port, qs_log):
    """The bash script that runs the snippets; returns (script, after-stop script)."""
    s = [
        "set -euo pipefail",
        f"cd {repo}",
        "step() { printf '\\n== README line %s: %s\\n' \"$1\" \"$2\" >&2; }",
    ]
    after = ["set -euo pipefail", f"cd {repo}"]
    fix = (lambda t: t.replace("8443", str(port))) if port != PORT else (lambda t: t)
    n_console = 0
    for lang, marker, line, code in readme_blocks:
        code = fix(code)
        first = code.strip().split("\n")[0][:60]
        if marker == "skip":
            s.append(f"step {line} 'skipped: {first}'")
            continue
        if lang == "sh" and marker == "background":
            s.append(f"step {line} {sh_quote('in the background: ' + first)}")
            s.append(f"setsid bash -c {sh_quote(code)} >{qs_log} 2>&1 &")
            s.append("echo $! > quickstart.pid")
            s.append(wait_ready(port, qs_log))
        elif lang == "sh" and marker == "after-stop":
            after.append(f"printf '\\n== README line {line} (after the quickstart stopped)\\n' >&2")
            after.append(code)
        elif lang == "sh":
            s.append(f"step {line} {sh_quote(first)}")
            s.append(code)
        elif lang == "python":
            s.append(f"step {line} python")
            s.append("python3 - " + heredoc(code, "README_PY_EOF"))
        elif lang == "console":
            cmd, expected = None, []
            pairs = []
            for l in code.split("\n"):
                if l.startswith("$ "):
                    if cmd is not None:
                        pairs.append((cmd, expected))
                    cmd, expected = l[2:], []
                elif cmd is not None:
                    expected.append(l)
            if cmd is not None:
                pairs.append((cmd, expected))
            for cmd, expected in pairs:
                n_console += 1
                exp = f"console-{n_console}.expected"
                s.append(f"step {line} {sh_quote('$ ' + cmd)}")
                s.append(f"cat > {exp} " + heredoc("\n".join(expected).rstrip("\n"), "README_OUT_EOF"))
                s.append(f"{cmd} > {exp}.got")
                s.append(f"diff -u {exp} {exp}.got")
    return "\n".join(s) + "\n", "\n".join(after) + "\n"


def sh_quote(t):
    return "'" + t.replace("'", "'\\''") + "'"


def wait_ready(port, log):
    return f"""for i in $(seq 1 600); do
  if curl -sf -o /dev/null --cacert .state/local/tls/self-signed.crt https://127.0.0.1:{port}/; then break; fi
  if ! kill -0 "$(cat quickstart.pid)" 2>/dev/null; then echo "the quickstart stopped:" >&2; cat {log} >&2; exit 1; fi
  if [ "$i" = 600 ]; then echo "the quickstart did not serve in 300 s:" >&2; cat {log} >&2; exit 1; fi
  sleep 0.5
done
echo "quickstart serving on port {port}" >&2"""


def ours(tmp):
    """Processes whose command line, working folder or executable is in `tmp`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            where = [cmd]
            for link in ("cwd", "exe"):
                try:
                    where.append(os.readlink(p / link))
                except OSError:
                    pass
        except OSError:
            continue
        if any(str(tmp) in w for w in where):
            found.append((int(p.name), cmd.strip()))
    return found


def main():
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "README.md").resolve()
    bin_dir = Path(os.environ.get("DAYSHIFT_BIN_DIR", ROOT / "target/release")).resolve()
    for b in ("dayshift", "dayshift-node"):
        if not (bin_dir / b).is_file():
            sys.exit(f"check-readme: no {bin_dir / b}: build it or set DAYSHIFT_BIN_DIR")
    tmp = Path(tempfile.mkdtemp(prefix="dayshift-readme-"))
    repo = tmp / "repo"
    qs_log = tmp / "quickstart.log"
    code = 1
    try:
        copy_repo(repo)
        shutil.copy2(readme, repo / "README.md")
        (repo / "target/release").mkdir(parents=True)
        for b in ("dayshift", "dayshift-node"):
            os.symlink(bin_dir / b, repo / "target/release" / b)
        port = PORT if port_free(PORT) else free_port()
        if port != PORT:
            print(f"check-readme: port {PORT} is taken; the copy uses {port}", file=sys.stderr)
            cfg = repo / "examples/local/dayshift.toml"
            cfg.write_text(cfg.read_text().replace(str(PORT), str(port)))
        main_sh, after_sh = script_for(blocks(readme.read_text()), repo, port, qs_log)
        (tmp / "readme.sh").write_text(main_sh)
        (tmp / "after.sh").write_text(after_sh)
        env = dict(os.environ)
        env["DAYSHIFT_PREBUILT"] = "1"
        env.setdefault("DAYSHIFT_CACHE", str(Path.home() / ".cache/dayshift"))
        t0 = time.monotonic()
        rc = subprocess.run(["bash", str(tmp / "readme.sh")], env=env, timeout=900).returncode
        # Stop the quickstart as Ctrl-C would (SIGINT to its process group).
        pid_file = repo / "quickstart.pid"
        stopped = True
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.killpg(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and ours(tmp):
                time.sleep(0.3)
        left = ours(tmp)
        if left:
            stopped = False
            print("check-readme: still running after Ctrl-C (SIGINT) and 60 s:", file=sys.stderr)
            for pid, cmd in left:
                print(f"  {pid} {cmd}", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        rc_after = 0
        if rc == 0:
            rc_after = subprocess.run(["bash", str(tmp / "after.sh")], env=env, timeout=120).returncode
        if rc != 0 or rc_after != 0:
            print(f"check-readme: a snippet failed; the quickstart's log ({qs_log}):", file=sys.stderr)
            if qs_log.exists():
                print(qs_log.read_text()[-6000:], file=sys.stderr)
        else:
            print(f"check-readme: every README snippet ran ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        code = 0 if rc == 0 and rc_after == 0 and stopped else 1
    finally:
        if os.environ.get("README_CHECK_KEEP") or code != 0:
            print(f"check-readme: the copy is kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
