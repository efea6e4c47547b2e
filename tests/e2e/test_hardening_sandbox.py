"""Sandbox hardening from the outside audit (issue 7, findings 1, 10 and
11), each tried for real: socket families outside the allow-list, files
placed where a client must not write, syscalls and personalities the
filter refuses, core dumps that would start a host helper, and the
host-wide figures /proc would otherwise show.

Where the kernel alone could also refuse, the probe says so: families the
kernel does not know fail with EAFNOSUPPORT anyway, so the vsock probe
first checks that the host itself can make such a socket.
"""
import base64
import errno
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import describe, probes, unique_marker
from sbxserver import SbxServer

AF_VSOCK = 40
# socket(2)'s number, for probes that pass bits the socket module refuses.
SYS_SOCKET = {"x86_64": 41, "aarch64": 198}.get(platform.machine(), -1)
# Families Linux knows (AF_MAX is 46 since 5.15); probe past it as well.
FAMILY_RANGE = range(0, 64)
ALLOWED = {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6,
           socket.AF_NETLINK}


def sandbox_probe(py, body, *argv, opts=()):
    prelude = textwrap.dedent("""\
        import ctypes, errno, os, socket, sys
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long

        def name(e):
            return errno.errorcode.get(e, str(e))

        def raw(label, nr, *args):
            ctypes.set_errno(0)
            r = libc.syscall(ctypes.c_long(nr),
                             *[ctypes.c_long(a) if isinstance(a, int) else a
                               for a in args])
            print(label, "OK" if r != -1 else name(ctypes.get_errno()),
                  flush=True)
            return r

        def sock(label, *args):
            try:
                socket.socket(*args).close()
            except OSError as ex:
                print(label, name(ex.errno), flush=True)
            else:
                print(label, "OK", flush=True)
        """)
    cp, res = py(prelude + textwrap.dedent(body), *argv, opts=opts)
    assert res is not None and res["status"] == "ok", describe(cp, res)
    return probes(cp)


# Finding 1: socket families are an allow-list.

def test_every_family_outside_the_allow_list_is_refused(py):
    body = """\
        for fam in range(%d, %d):
            for kind, typ in (("stream", socket.SOCK_STREAM),
                              ("dgram", socket.SOCK_DGRAM),
                              ("seqpacket", socket.SOCK_SEQPACKET),
                              ("flags", socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                               | socket.SOCK_NONBLOCK)):
                sock("%%d.%%s" %% (fam, kind), fam, typ, 0)
            try:
                a, b = socket.socketpair(fam, socket.SOCK_STREAM)
                a.close(); b.close()
                print("%%d.pair OK" %% fam, flush=True)
            except OSError as ex:
                print("%%d.pair %%s" %% (fam, name(ex.errno)), flush=True)
        """ % (FAMILY_RANGE.start, FAMILY_RANGE.stop)
    p = sandbox_probe(py, body)
    for fam in FAMILY_RANGE:
        got = {k: p["%d.%s" % (fam, k)]
               for k in ("stream", "dgram", "seqpacket", "flags")}
        if fam in ALLOWED:
            assert "EAFNOSUPPORT" not in got.values(), (fam, got)
            assert "OK" in got.values(), (fam, got)
        else:
            assert set(got.values()) == {"EAFNOSUPPORT"}, (fam, got)
        pair = p["%d.pair" % fam]
        if fam == socket.AF_UNIX:
            assert pair == "OK", pair
        else:
            assert pair == "EAFNOSUPPORT", (fam, pair)


def test_vsock_is_refused(py):
    # vsock ignores network namespaces: a sandbox would share the host
    # VM's port space and reach the hypervisor.
    try:
        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()
        host = "OK"
    except OSError as ex:
        host = errno.errorcode.get(ex.errno, str(ex.errno))
    body = """\
        sock("stream", %d, socket.SOCK_STREAM, 0)
        sock("dgram", %d, socket.SOCK_DGRAM, 0)
        sock("seqpacket", %d, socket.SOCK_SEQPACKET, 0)
        # Only the low 32 bits of the family reach the kernel.
        if %d >= 0:
            raw("high_bits", %d, (1 << 32) | %d, socket.SOCK_STREAM, 0)
        """ % ((AF_VSOCK,) * 3 + (SYS_SOCKET, SYS_SOCKET, AF_VSOCK))
    p = sandbox_probe(py, body)
    want = {"stream": "EAFNOSUPPORT", "dgram": "EAFNOSUPPORT",
            "seqpacket": "EAFNOSUPPORT"}
    if SYS_SOCKET >= 0:
        want["high_bits"] = "EAFNOSUPPORT"
    assert p == want, p
    if host == "EAFNOSUPPORT":
        pytest.skip("this host has no vsock (%s): the refusal inside proves "
                    "nothing about the filter" % host)


def test_netlink_route_only_and_no_raw_or_packet_types(py):
    body = """\
        sock("route_raw", socket.AF_NETLINK,
             socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        sock("route_dgram", socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        for proto in (4, 9, 12, 15, 16):  # sock_diag audit netfilter
            sock("netlink_%d" % proto,    # uevent generic
                 socket.AF_NETLINK, socket.SOCK_RAW, proto)
        if SYS_SOCKET >= 0:
            raw("netlink_high", SYS_SOCKET, socket.AF_NETLINK,
                socket.SOCK_RAW, 1 << 32)
        sock("sctp", socket.AF_INET, socket.SOCK_STREAM, 132)
        sock("sctp6", socket.AF_INET6, socket.SOCK_SEQPACKET, 132)
        sock("tcp", socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock("udp6", socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock("raw_flags", socket.AF_INET,
             socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMP)
        sock("unix_raw", socket.AF_UNIX, socket.SOCK_RAW, 0)
        sock("inet_packet", socket.AF_INET, 10, 0)  # SOCK_PACKET
        """
    p = sandbox_probe(py, body.replace("SYS_SOCKET", str(SYS_SOCKET)))
    assert p["route_raw"] == "OK", p
    assert p["route_dgram"] == "OK", p
    for proto in (4, 9, 12, 15, 16):
        assert p["netlink_%d" % proto] == "EPROTONOSUPPORT", p
    if SYS_SOCKET >= 0:
        assert p["netlink_high"] == "EPROTONOSUPPORT", p
    assert p["sctp"] == "EPROTONOSUPPORT", p
    assert p["sctp6"] == "EPROTONOSUPPORT", p
    assert p["tcp"] == "OK" and p["udp6"] == "OK", p
    assert p["raw_flags"] == "EPERM", p
    assert p["unix_raw"] == "EPERM", p
    # The kernel alone turns AF_INET + SOCK_PACKET into a packet socket.
    assert p["inet_packet"] == "EPERM", p


def test_ip_addr_works_inside(run):
    if not (shutil.which("ip") or os.path.exists("/usr/sbin/ip")
            or os.path.exists("/sbin/ip")):
        pytest.skip("iproute2 is not installed on this host")
    cp, res = run(["--", "ip", "addr"])
    assert res["status"] == "ok", describe(cp, res)
    out = cp.stdout.decode()
    assert "lo:" in out and "127.0.0.1" in out, out
    cp, res = run(["--", "ip", "-d", "link", "show", "lo"])
    assert res["status"] == "ok", describe(cp, res)


# Finding 11: syscalls and personalities.

def test_mount_api_ldt_and_lsm_syscalls_refused(py, x86_64):
    # Arguments the kernel alone would answer with EFAULT, EBADF or
    # success, so EPERM can only come from the filter.
    body = """\
        raw("modify_ldt", 154, 0, 0, 0)            # read: 0 bytes
        raw("statmount", 457, 0, 0, 0, 0)          # EFAULT
        raw("listmount", 458, 0, 0, 0, 0)          # EFAULT
        raw("lsm_get_self_attr", 459, 0, 0, 0, 0)
        raw("lsm_list_modules", 461, 0, 0, 0)      # EFAULT
        raw("open_tree_attr", 467, -1, 0, 0, 0, 0) # EBADF/EFAULT
        raw("open_tree", 428, -1, 0, 0)            # EBADF
        raw("fsopen", 430, 0, 0)                   # EFAULT
        raw("mount_setattr", 442, -1, 0, 0, 0, 0)  # EBADF
        raw("process_madvise", 440, -1, 0, 0, 0, 0)  # EBADF
        raw("pidfd_getfd", 438, -1, 0, 0)          # EBADF
        raw("kcmp", 312, os.getpid(), os.getpid(), 0, 0, 0)
        raw("name_to_handle_at", 303, -1, 0, 0, 0, 0)
        raw("future", 500, 0, 0, 0)
        """
    p = sandbox_probe(py, body)
    for call in ("modify_ldt", "statmount", "listmount", "lsm_get_self_attr",
                 "lsm_list_modules", "open_tree_attr", "open_tree", "fsopen",
                 "mount_setattr", "process_madvise", "pidfd_getfd", "kcmp",
                 "name_to_handle_at"):
        assert p[call] == "EPERM", (call, p)
    assert p["future"] == "ENOSYS", p


def test_personality_query_only(py, x86_64):
    body = """\
        raw("query", 135, 0xffffffff)
        raw("linux", 135, 0)
        raw("no_randomize", 135, 0x0040000)   # ADDR_NO_RANDOMIZE
        raw("read_exec", 135, 0x0400000)      # READ_IMPLIES_EXEC
        raw("page_zero", 135, 0x0100000)      # MMAP_PAGE_ZERO
        raw("linux32", 135, 0x0008)
        raw("high_bits", 135, (1 << 32) | 0x0040000)
        """
    p = sandbox_probe(py, body)
    assert p["query"] == "OK" and p["linux"] == "OK", p
    for k in ("no_randomize", "read_exec", "page_zero", "linux32",
              "high_bits"):
        assert p[k] == "EPERM", (k, p)


# Finding 11: core dumps never reach a host helper.

def test_core_limit_is_one_and_cannot_change(py, x86_64):
    body = """\
        import resource
        print("limit", "%d/%d" % resource.getrlimit(resource.RLIMIT_CORE))
        rl = (ctypes.c_ulong * 2)(0, 0)
        raw("setrlimit", 160, resource.RLIMIT_CORE, ctypes.addressof(rl))
        raw("prlimit_set", 302, 0, resource.RLIMIT_CORE,
            ctypes.addressof(rl), 0)
        raw("prlimit_high", 302, 0, (1 << 32) | resource.RLIMIT_CORE,
            ctypes.addressof(rl), 0)
        old = (ctypes.c_ulong * 2)()
        raw("prlimit_get", 302, 0, resource.RLIMIT_CORE, 0,
            ctypes.addressof(old))
        print("after", "%d/%d" % resource.getrlimit(resource.RLIMIT_CORE))
        """
    p = sandbox_probe(py, body)
    assert p["limit"] == "1/1", p
    assert p["setrlimit"] == "EPERM", p
    assert p["prlimit_set"] == "EPERM", p
    assert p["prlimit_high"] == "EPERM", p
    assert p["prlimit_get"] == "OK", p
    assert p["after"] == "1/1", p


CRASH = textwrap.dedent("""\
    import ctypes, os, resource, signal, sys
    libc = ctypes.CDLL(None)
    libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)   # PR_SET_NAME
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGSEGV)
    """)


@pytest.fixture
def pipe_core_pattern(tmp_path):
    """Points core_pattern at a helper that records each crash's command
    name, and makes the kernel wait for it (core_pipe_limit), so a crash
    has been recorded by the time its process is reaped. Restores both."""
    if os.geteuid() != 0:
        pytest.skip("changing core_pattern needs root")
    pat_path = "/proc/sys/kernel/core_pattern"
    lim_path = "/proc/sys/kernel/core_pipe_limit"
    try:
        with open(pat_path) as f:
            old_pat = f.read().rstrip("\n")
        with open(lim_path) as f:
            old_lim = f.read().strip()
    except OSError as e:
        pytest.skip("cannot read core_pattern: %s" % e)
    marker = tmp_path / "crashes"
    helper = tmp_path / "helper.sh"
    helper.write_text("#!/bin/sh\necho \"$1\" >> %s\ncat > /dev/null\n"
                      % marker)
    helper.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    try:
        with open(pat_path, "w") as f:
            f.write("|%s %%e" % helper)
        with open(lim_path, "w") as f:
            f.write("64")
    except OSError as e:
        pytest.skip("core_pattern is not writable here: %s" % e)
    try:
        yield marker
    finally:
        with open(pat_path, "w") as f:
            f.write(old_pat)
        with open(lim_path, "w") as f:
            f.write(old_lim)


def no_core_file():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def crashes(marker):
    try:
        return marker.read_text().split()
    except FileNotFoundError:
        return []


def test_crash_in_sandbox_starts_no_core_pattern_helper(py,
                                                       pipe_core_pattern):
    marker = pipe_core_pattern
    # The same crash on the host shows the helper runs at all.
    host_name = "h" + unique_marker()[-12:]
    subprocess.run([sys.executable, "-c", CRASH, host_name],
                   stdin=subprocess.DEVNULL, capture_output=True,
                   preexec_fn=no_core_file)
    if host_name not in crashes(marker):
        pytest.skip("this kernel started no core_pattern helper for a host "
                    "crash: nothing to compare with")
    name = "s" + unique_marker()[-12:]
    cp, res = py(CRASH, name)
    assert res is not None and res["status"] == "signaled", describe(cp, res)
    assert name not in crashes(marker), (
        "a sandbox crash started the host's core_pattern helper")


# Finding 11: /proc shows no host-wide figures.

MASKED = ["kcore", "keys", "key-users", "timer_list", "sched_debug",
          "kallsyms", "kmsg", "config.gz", "vmstat", "zoneinfo", "slabinfo",
          "vmallocinfo", "interrupts", "softirqs", "diskstats", "partitions",
          "swaps", "schedstat", "locks", "buddyinfo", "pagetypeinfo",
          "iomem", "ioports", "modules", "latency_stats", "timer_stats",
          "kpagecount", "kpageflags", "kpagecgroup", "mtrr", "cmdline",
          "sys/fs/file-nr", "sys/fs/inode-nr", "sys/fs/inode-state",
          "sys/fs/dentry-state", "sys/kernel/random/boot_id"]


def test_proc_host_figures_are_masked(py):
    body = """\
        import json
        out = {}
        for name in sys.argv[1:]:
            try:
                with open("/proc/" + name, "rb") as f:
                    out[name] = len(f.read())
            except OSError as ex:
                out[name] = errno.errorcode.get(ex.errno)
        out["pressure"] = sorted(os.listdir("/proc/pressure")) \\
            if os.path.isdir("/proc/pressure") else None
        out["meminfo"] = open("/proc/meminfo").read()
        out["loadavg"] = open("/proc/loadavg").read()
        out["stat"] = open("/proc/stat").read()
        try:
            open("/proc/meminfo", "w").write("x")
            out["write"] = "OK"
        except OSError as ex:
            out["write"] = errno.errorcode.get(ex.errno)
        out["cpus"] = [os.cpu_count(), len(os.sched_getaffinity(0))]
        print("json", json.dumps(out))
        """
    p = sandbox_probe(py, body, *MASKED, opts=["--memory", "300M"])
    out = json.loads(p["json"])
    host = [n for n in MASKED if os.path.exists("/proc/" + n)]
    for name in host:
        assert out[name] == 0, (name, out[name])
    assert out["pressure"] in (None, []), out["pressure"]
    mem = {l.split(":")[0]: l.split()[1]
           for l in out["meminfo"].splitlines()}
    assert mem["MemTotal"] == str(300 << 10), out["meminfo"]
    assert mem["MemAvailable"] == mem["MemTotal"], out["meminfo"]
    assert out["loadavg"].split()[:3] == ["0.00", "0.00", "0.00"], out
    for line in out["stat"].splitlines():
        if line.startswith(("cpu", "intr", "ctxt", "processes")):
            assert set(line.split()[1:]) == {"0"}, line
    assert "btime" in out["stat"]
    assert out["write"] in ("EACCES", "EROFS"), out["write"]
    # glibc counts the CPUs in /proc/stat when /sys is absent.
    assert out["cpus"][0] == out["cpus"][1], out["cpus"]


def test_common_tools_still_work_with_masked_proc(run):
    script = textwrap.dedent("""\
        set -e
        free -m | grep -q '^Mem: *256 '
        ps -eo pid,etime,comm | grep -q ps
        python3 -c 'import multiprocessing as m; p = m.Pool(2); \
    assert p.map(abs, [-1, -2]) == [1, 2]; print("pool", m.cpu_count())'
        """)
    if not shutil.which("free") or not shutil.which("ps"):
        pytest.skip("procps (free, ps) is not installed on this host")
    cp, res = run(["--memory", "256M", "--", "bash", "-c", script])
    assert res["status"] == "ok", describe(cp, res)
    assert b"pool" in cp.stdout, describe(cp, res)


# Finding 10: where /run_code may place files.

def b64(data):
    return base64.b64encode(data).decode()


SLACK = "import ctypes; print(ctypes.CDLL(None).prctl(30, 0, 0, 0, 0))"


@pytest.fixture(scope="module")
def cold_srv():
    # Cold sandboxes: init forks the program after placing the files, so a
    # write to init's /proc/1/timerslack_ns would show in the program's
    # own timer slack (PR_GET_TIMERSLACK), as it did before the fix.
    with SbxServer(extra_args=["--warm", "0"]) as srv:
        yield srv


def test_run_code_files_outside_the_allowed_places_are_refused(cold_srv):
    for path in ["/proc/1/timerslack_ns", "/proc/self/timerslack_ns",
                 "/proc/thread-self/comm", "/etc/cron.d/x", "/dev/shm/x",
                 "/usr/local/bin/x", "/tmp", "/home/sandboxx/a",
                 "/work/../etc/x", "/tmp/../proc/1/timerslack_ns"]:
        status, _, resp = cold_srv.post("/run_code", {
            "code": SLACK, "language": "python",
            "files": {path: b64(b"12345")}})
        assert status == 422, (path, status, resp)
        msg = resp["error"]["message"]
        assert "bad file path" in msg and "/tmp, /mnt" in msg, (path, msg)
    # The program's timer slack is the kernel's default, untouched.
    status, _, resp = cold_srv.post("/run_code", {
        "code": SLACK, "language": "python"})
    assert status == 200 and resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"].strip() == "50000", resp


def test_run_code_files_in_the_allowed_places_are_written(cold_srv):
    files = {"rel/a.txt": b"A", "/work/b.txt": b"B", "/tmp/c.txt": b"C",
             "/mnt/d/e.txt": b"E", "/home/sandbox/f.txt": b"F"}
    code = textwrap.dedent("""\
        import os
        for p in ["/work/rel/a.txt", "/work/b.txt", "/tmp/c.txt",
                  "/mnt/d/e.txt", "/home/sandbox/f.txt"]:
            st = os.stat(p)
            print(p, open(p).read(), st.st_uid == os.getuid())
        """)
    status, _, resp = cold_srv.post("/run_code", {
        "code": code, "language": "python",
        "files": {k: b64(v) for k, v in files.items()}})
    assert status == 200 and resp["status"] == "Success", resp
    lines = resp["run_result"]["stdout"].splitlines()
    # Written as the sandbox user (uid 1000 inside a user namespace).
    assert lines == ["/work/rel/a.txt A True", "/work/b.txt B True",
                     "/tmp/c.txt C True", "/mnt/d/e.txt E True",
                     "/home/sandbox/f.txt F True"], lines


def test_run_code_fetch_files_skip_procfs(cold_srv):
    status, _, resp = cold_srv.post("/run_code", {
        "code": "open('out.txt', 'w').write('x')", "language": "python",
        "fetch_files": ["/proc/1/environ", "/proc/self/status",
                        "/proc/1/timerslack_ns", "out.txt"]})
    assert status == 200 and resp["status"] == "Success", resp
    assert resp["files"] == {"out.txt": b64(b"x")}, resp["files"]


def test_native_run_files_stay_relative(cold_srv):
    status, _, resp = cold_srv.post("/v1/run", {
        "language": "python", "entry": "main.py",
        "files": {"main.py": "print(1)",
                  "/proc/1/timerslack_ns": "12345"}})
    assert status in (400, 422), (status, resp)
    assert "files" in resp["error"]["message"], resp


# The file API on kernels without openat2 (before 5.6), tried here by
# starting the server with openat2 answering ENOSYS.

NO_OPENAT2 = textwrap.dedent("""\
    #!/usr/bin/python3
    import ctypes, errno, os, sys
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint(0x7fff0000)))
    nr = lib.seccomp_syscall_resolve_name(b"openat2")
    act = 0x00050000 | errno.ENOSYS          # SCMP_ACT_ERRNO(ENOSYS)
    if nr < 0 or lib.seccomp_rule_add(ctx, ctypes.c_uint(act), nr, 0) \\
            or lib.seccomp_load(ctx):
        sys.exit("cannot install the filter")
    os.execv(%r, [%r] + sys.argv[1:])
    """)


def test_file_api_without_openat2_follows_no_magic_link(tmp_path,
                                                        monkeypatch):
    import ctypes.util
    import sbxserver
    from conftest import SBX
    from test_sandboxes import Boxes

    if not ctypes.util.find_library("seccomp"):
        pytest.skip("libseccomp is not installed on this host")
    wrapper = tmp_path / "sbx-no-openat2"
    wrapper.write_text(NO_OPENAT2 % (SBX, SBX))
    wrapper.chmod(0o755)
    monkeypatch.setattr(sbxserver, "SBX", str(wrapper))
    with SbxServer() as srv:
        boxes = Boxes(srv)
        try:
            box = boxes()
            box.sh("ln -s /proc/1/exe /work/exe; mkdir -p /work/d; "
                   "echo hi > /work/d/f; ln -s d /work/l")
            for status, _, data in (box.get("exe", guard_s=10),
                                    box.get_abs("/proc/1/exe", guard_s=10),
                                    box.get_abs("/proc/1/environ",
                                                guard_s=10)):
                assert 400 <= status < 500, (status, data[:200])
                assert not data.startswith(b"\x7fELF"), data[:64]
            # Ordinary symlinks inside the sandbox still work.
            status, _, data = box.get("l/f", guard_s=10)
            assert (status, data) == (200, b"hi\n"), (status, data)
        finally:
            boxes.cleanup()
