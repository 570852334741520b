#!/usr/bin/env python3
"""E2B compatibility probe for `voidbox serve`, using the unmodified `e2b` Python SDK.

Run (any cwd; the SDK must be importable, e.g. from the venv in target/e2b-sdk):
    E2B_API_URL=http://127.0.0.1:PORT E2B_SANDBOX_URL=http://127.0.0.1:PORT \
    E2B_API_KEY=e2b_<hex token> VOIDBOX_E2B_TEMPLATE=<image ref or snapshot name> \
    target/e2b-sdk/venv/bin/python crates/voidbox-server/tests/e2b/probe.py
Optional: VOIDBOX_E2B_SKIP_WATCH=1 skips the watch_dir steps; VOIDBOX_E2B_SKIP_ASYNC=1 the AsyncSandbox part.
Prints "ok <step>" per passed step. On the first failure prints "FAIL <step>: <why>" to
stderr, kills the sandbox it created and exits 1.
"""
import asyncio
import os
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from e2b import (AsyncSandbox, CommandExitException, FileType, NotFoundException,
                 Sandbox, SandboxQuery)
from packaging.version import Version

for var in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "VOIDBOX_E2B_TEMPLATE"):
    if not os.environ.get(var):
        sys.exit(f"FAIL setup: environment variable {var} is not set")
TEMPLATE = os.environ["VOIDBOX_E2B_TEMPLATE"]
SKIP_WATCH = os.environ.get("VOIDBOX_E2B_SKIP_WATCH") == "1"
RUN = uuid.uuid4().hex[:8]
BASE = f"/tmp/e2b-probe-{RUN}"
META = {"probe": RUN, "lang": "python"}
created = []  # sandboxes to clean up on failure


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


@contextmanager
def step(name):
    try:
        yield
    except Fail as e:
        die(name, str(e))
    except Exception as e:  # an SDK exception where none was expected
        traceback.print_exc()
        die(name, f"unexpected {type(e).__name__}: {e}")
    print(f"ok {name}", flush=True)


def die(name, why):
    print(f"FAIL {name}: {why}", file=sys.stderr, flush=True)
    for sid in created:
        try:
            Sandbox.kill(sid)
        except Exception:
            pass
    sys.exit(1)


def raises(fn, exc_types, what):
    """Call fn, require it to raise one of exc_types; return the exception."""
    try:
        res = fn()
    except exc_types as e:
        return e
    raise Fail(f"{what}: expected {exc_types}, call returned {res!r}")


def utc(dt):
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def count_procs(sbx, needle):
    # coreutils-only process count (no procps in the image): scan /proc cmdlines.
    cmd = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
           f" | grep -c '^{needle}' || true")
    return int(sbx.commands.run(cmd).stdout.strip() or "0")


with step("create (unknown template raises, mentions template)"):
    bogus = f"voidbox-probe-no-such-template-{RUN}"
    e = raises(lambda: created.append(Sandbox.create(template=bogus).sandbox_id),
               Exception, "Sandbox.create(unknown template)")
    check(bogus in str(e), f"error message does not mention the template: {e!r}")

with step("create"):
    sbx = Sandbox.create(template=TEMPLATE, timeout=300, envs={"FOO": "bar-from-create"},
                         metadata=META)
    created.append(sbx.sandbox_id)
    check(sbx.sandbox_id, "empty sandbox_id")
    print(f"   sandbox {sbx.sandbox_id} envd {sbx._envd_version}", flush=True)
ENVD = sbx._envd_version

with step("commands.run foreground + create envs"):
    r = sbx.commands.run("echo $FOO")
    check(r.exit_code == 0 and r.stdout == "bar-from-create\n", f"got {r!r}")

with step("commands.run envs / cwd / user=root"):
    r = sbx.commands.run('echo "$A-$B-$FOO"', envs={"A": "1", "B": "two"})
    check(r.stdout == "1-two-bar-from-create\n", f"envs: stdout {r.stdout!r}")
    r = sbx.commands.run("pwd", cwd="/tmp")
    check(r.stdout == "/tmp\n", f"cwd: stdout {r.stdout!r}")
    r = sbx.commands.run("id -un", user="root")
    check(r.stdout == "root\n", f"user: stdout {r.stdout!r}")

with step("commands.run non-zero exit -> CommandExitException"):
    e = raises(lambda: sbx.commands.run("echo out; echo oops >&2; exit 3"),
               CommandExitException, "exit 3")
    check(e.exit_code == 3, f"exit_code {e.exit_code!r}")
    check(e.stderr == "oops\n" and e.stdout == "out\n", f"stdout {e.stdout!r} stderr {e.stderr!r}")

with step("commands.run timeout (sleep 30, timeout=2)"):
    t0 = time.monotonic()
    e = raises(lambda: sbx.commands.run("sleep 30", timeout=2), Exception, "timeout=2")
    took = time.monotonic() - t0
    check(took < 10, f"raised {type(e).__name__} only after {took:.1f}s")
    time.sleep(1)
    check(count_procs(sbx, "sleep 30") == 0, "'sleep 30' still running after the timeout")

with step("commands.run background + wait"):
    h = sbx.commands.run("sleep 1; echo done", background=True)
    check(isinstance(h.pid, int) and h.pid > 0, f"pid {h.pid!r}")
    r = h.wait()
    check(r.exit_code == 0 and r.stdout == "done\n", f"got {r!r}")

with step("commands.run on_stdout/on_stderr streaming"):
    out, err, first = [], [], []

    def on_out(chunk):
        out.append(chunk)
        first.append(time.monotonic())

    t0 = time.monotonic()
    r = sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.5; done; echo bad >&2",
                         on_stdout=on_out, on_stderr=err.append)
    end = time.monotonic()
    check("".join(out) == "line1\nline2\nline3\n", f"stdout chunks {out!r}")
    check("".join(err) == "bad\n", f"stderr chunks {err!r}")
    check(r.stdout == "line1\nline2\nline3\n", f"result stdout {r.stdout!r}")
    check(len(out) >= 2 and end - first[0] > 0.7,
          f"output not streamed: {len(out)} chunk(s), first {end - first[0]:.2f}s before the end")

with step("commands.send_stdin (stdin=True, head -n1)"):
    h = sbx.commands.run("head -n1", background=True, stdin=True, timeout=20)
    sbx.commands.send_stdin(h.pid, "hello-stdin\n")
    r = h.wait()
    check(r.stdout == "hello-stdin\n", f"got stdout {r.stdout!r}")

if ENVD >= Version("0.5.2"):  # the SDK refuses close_stdin below this
    with step("commands.close_stdin (cat)"):
        h = sbx.commands.run("cat", background=True, stdin=True, timeout=20)
        h.send_stdin(b"abc\xc3\xa9")
        sbx.commands.close_stdin(h.pid)
        r = h.wait()
        check(r.stdout == "abcé", f"got stdout {r.stdout!r}")
else:
    print(f"skip commands.close_stdin: envd {ENVD} < 0.5.2", flush=True)

with step("commands.list"):
    h = sbx.commands.run("sleep 300", background=True, timeout=60)
    procs = sbx.commands.list()
    mine = [p for p in procs if p.pid == h.pid]
    check(mine, f"pid {h.pid} not in {[(p.pid, p.cmd, p.args) for p in procs]}")
    check(mine[0].cmd == "/bin/bash" and mine[0].args[-1] == "sleep 300", f"got {mine[0]!r}")
    check(sbx.commands.kill(h.pid) is True, "kill of listed process")

with step("commands.kill(pid) -> True, wait raises, second kill -> False"):
    h = sbx.commands.run("sleep 600", background=True, timeout=30)
    t0 = time.monotonic()
    check(sbx.commands.kill(h.pid) is True, "kill returned not True")
    e = raises(h.wait, Exception, "wait() after kill")
    check(time.monotonic() - t0 < 10, "wait() took >10s after kill")
    if isinstance(e, CommandExitException):
        check(e.exit_code != 0, f"killed command exit_code {e.exit_code}")
    check(sbx.commands.kill(h.pid) is False, "second kill of a dead pid did not return False")

with step("handle.kill()"):
    h = sbx.commands.run("sleep 600", background=True, timeout=30)
    check(h.kill() is True, "handle.kill() returned not True")
    raises(h.wait, Exception, "wait() after handle.kill()")
    check(count_procs(sbx, "sleep 600") == 0, "'sleep 600' still running")

TEXT = "héllo\nwörld\n"
BIN = bytes(range(256)) + b"\xff\xfe\x00\x80"
with step("files.write str + read text"):
    info = sbx.files.write(f"{BASE}/hello.txt", TEXT)  # parent dir does not exist yet
    check(info.path == f"{BASE}/hello.txt" and info.name == "hello.txt", f"write info {info!r}")
    got = sbx.files.read(f"{BASE}/hello.txt")
    check(got == TEXT, f"read back {got!r}")
    check(sbx.commands.run(f"cat {BASE}/hello.txt").stdout == TEXT, "guest sees other content")

with step("files.write bytes + read bytes (non-UTF-8)"):
    sbx.files.write(f"{BASE}/bin.dat", BIN)
    got = sbx.files.read(f"{BASE}/bin.dat", format="bytes")
    check(bytes(got) == BIN, f"read back {len(got)} bytes, differs from {len(BIN)} written")
    check(sbx.commands.run(f"wc -c < {BASE}/bin.dat").stdout.strip() == str(len(BIN)), "size in guest")

with step("files.write use_octet_stream=True"):
    sbx.files.write(f"{BASE}/oct.dat", BIN, use_octet_stream=True)
    check(bytes(sbx.files.read(f"{BASE}/oct.dat", format="bytes")) == BIN, "octet-stream round trip")

with step("files.read missing -> NotFoundException"):
    raises(lambda: sbx.files.read(f"{BASE}/nope.txt"), NotFoundException, "read missing")

with step("files.make_dir True then False"):
    check(sbx.files.make_dir(f"{BASE}/sub/deep") is True, "first make_dir not True")
    check(sbx.files.make_dir(f"{BASE}/sub/deep") is False, "second make_dir not False")

with step("files.list"):
    entries = {e.name: e for e in sbx.files.list(BASE)}
    check({"hello.txt", "bin.dat", "oct.dat", "sub"} <= set(entries), f"names {sorted(entries)}")
    check(entries["bin.dat"].type == FileType.FILE and entries["sub"].type == FileType.DIR,
          f"types {entries['bin.dat'].type}, {entries['sub'].type}")
    check(entries["bin.dat"].size == len(BIN), f"size {entries['bin.dat'].size}")
    check(entries["bin.dat"].path == f"{BASE}/bin.dat", f"path {entries['bin.dat'].path}")

with step("files.exists true/false + get_info"):
    check(sbx.files.exists(f"{BASE}/hello.txt") is True, "exists(hello.txt) not True")
    check(sbx.files.exists(f"{BASE}/nope.txt") is False, "exists(nope.txt) not False")
    gi = sbx.files.get_info(f"{BASE}/bin.dat")
    check(gi.type == FileType.FILE and gi.size == len(BIN) and gi.name == "bin.dat", f"{gi!r}")

with step("files.rename"):
    ent = sbx.files.rename(f"{BASE}/hello.txt", f"{BASE}/renamed.txt")
    check(ent.path == f"{BASE}/renamed.txt", f"rename returned {ent!r}")
    check(sbx.files.read(f"{BASE}/renamed.txt") == TEXT, "content at new path")
    check(sbx.files.exists(f"{BASE}/hello.txt") is False, "old path still exists")

with step("files.remove (file and non-empty dir)"):
    sbx.files.remove(f"{BASE}/renamed.txt")
    check(sbx.files.exists(f"{BASE}/renamed.txt") is False, "file still exists")
    sbx.files.remove(f"{BASE}/sub")
    check(sbx.files.exists(f"{BASE}/sub") is False, "dir still exists")

if SKIP_WATCH:
    print("skip files.watch_dir: VOIDBOX_E2B_SKIP_WATCH=1", flush=True)
else:
    with step("files.watch_dir (sync: CreateWatcher/GetWatcherEvents/RemoveWatcher)"):
        w = sbx.files.watch_dir(BASE)
        sbx.files.write(f"{BASE}/watched.txt", "x")
        seen, deadline = [], time.monotonic() + 5
        while time.monotonic() < deadline and not any(ev.name == "watched.txt" for ev in seen):
            time.sleep(0.3)
            seen += w.get_new_events()
        w.stop()
        check(any(ev.name == "watched.txt" for ev in seen),
              f"no event for watched.txt within 5s; got {[(ev.name, ev.type) for ev in seen]}")

with step("Sandbox.list (all pages) contains id + metadata"):
    pager, found = Sandbox.list(), {}
    while pager.has_next:
        found.update({i.sandbox_id: i for i in pager.next_items()})
    check(sbx.sandbox_id in found, f"{sbx.sandbox_id} not in {list(found)}")
    check(found[sbx.sandbox_id].metadata == META, f"metadata {found[sbx.sandbox_id].metadata!r}")
    check(found[sbx.sandbox_id].state.value == "running", f"state {found[sbx.sandbox_id].state}")

with step("Sandbox.list(query=metadata)"):
    items = Sandbox.list(query=SandboxQuery(metadata={"probe": RUN})).next_items()
    check([i.sandbox_id for i in items] == [sbx.sandbox_id], f"got {[i.sandbox_id for i in items]}")

with step("Sandbox.connect(id) + run on connected object"):
    sbx2 = Sandbox.connect(sbx.sandbox_id)
    check(sbx2.sandbox_id == sbx.sandbox_id, f"connected to {sbx2.sandbox_id}")
    check(sbx2.commands.run("echo $FOO").stdout == "bar-from-create\n", "run via connected object")
    check(bytes(sbx2.files.read(f"{BASE}/oct.dat", format="bytes")) == BIN, "read via connected object")
    check(sbx.connect() is sbx, "instance connect() did not return self")

with step("set_timeout + get_info"):
    sbx.set_timeout(600)
    now = datetime.now(timezone.utc)
    info = sbx.get_info()
    check(info.sandbox_id == sbx.sandbox_id, f"sandbox_id {info.sandbox_id}")
    check(TEMPLATE in (info.template_id, info.name) or info.template_id.endswith(TEMPLATE)
          or TEMPLATE.endswith(info.template_id), f"template_id {info.template_id!r} name {info.name!r}")
    check(info.metadata == META, f"metadata {info.metadata!r}")
    check(utc(info.started_at) <= now, f"started_at {info.started_at} is in the future")
    left = (utc(info.end_at) - now).total_seconds()
    check(540 < left < 660, f"end_at {info.end_at} is {left:.0f}s away, expected ~600 after set_timeout")
    check(info.state.value == "running" and info.cpu_count > 0 and info.memory_mb > 0, f"{info!r}")
    check(Sandbox.get_info(sbx.sandbox_id).sandbox_id == sbx.sandbox_id, "static get_info")

if os.environ.get("VOIDBOX_E2B_SKIP_ASYNC") == "1":
    print("skip AsyncSandbox: VOIDBOX_E2B_SKIP_ASYNC=1", flush=True)
else:
    async def async_part():
        a = await AsyncSandbox.create(template=TEMPLATE, timeout=120, envs={"FOO": "async"},
                                      metadata={"probe": RUN, "lang": "python-async"})
        created.append(a.sandbox_id)
        r = await a.commands.run("echo $FOO")
        check(r.stdout == "async\n", f"async run stdout {r.stdout!r}")
        chunks = []
        h = await a.commands.run("echo a; sleep 0.3; echo b", background=True, on_stdout=chunks.append)
        r = await h.wait()
        check("".join(chunks) == "a\nb\n" and r.stdout == "a\nb\n", f"async chunks {chunks!r}")
        if not SKIP_WATCH:  # async watch uses the WatchDir server stream (like JS)
            seen = []
            w = await a.files.watch_dir("/tmp", on_event=seen.append, timeout=30)
            await a.files.write(f"/tmp/awatch-{RUN}.txt", "y")
            for _ in range(25):
                if any(ev.name == f"awatch-{RUN}.txt" for ev in seen):
                    break
                await asyncio.sleep(0.2)
            await w.stop()
            check(any(ev.name == f"awatch-{RUN}.txt" for ev in seen),
                  f"async watch_dir saw {[(ev.name, ev.type) for ev in seen]}")
        check(await a.kill() is True, "async kill not True")
        check(await AsyncSandbox.kill(a.sandbox_id) is False, "async second kill not False")

    with step("AsyncSandbox create/run/background/watch/kill"):
        asyncio.run(async_part())

with step("kill -> True, kill again -> False, connect/get_info after kill -> NotFound"):
    check(sbx.kill() is True, "kill() not True")
    check(Sandbox.kill(sbx.sandbox_id) is False, "second kill not False")
    raises(lambda: Sandbox.connect(sbx.sandbox_id), NotFoundException, "connect after kill")
    raises(lambda: Sandbox.get_info(sbx.sandbox_id), NotFoundException, "get_info after kill")

print("ALL OK (python)", flush=True)
