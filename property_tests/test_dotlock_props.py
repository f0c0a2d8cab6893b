"""Properties of dotlock contents: any bytes are judged without an exception, our own
lock reads back as our pid on any file system, and a named pid is always a real one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.dotlock import PID_MAX_LIMIT, lock_content, lock_pid

# Any text, lone surrogates included (a host name decoded with surrogateescape has them).
_hosts = st.text(st.characters(exclude_categories=()), max_size=80) | st.from_regex(
    r"[a-z0-9.-]{1,64}", fullmatch=True
)
_pids = st.integers(min_value=1, max_value=PID_MAX_LIMIT)
_contents = st.binary(max_size=200) | st.builds(
    lambda pid, sep, host, tail: f"{pid}{sep}{host}".encode(errors="surrogatepass") + tail,
    st.integers(min_value=-10, max_value=2 * PID_MAX_LIMIT),
    st.sampled_from(["", ":", "\n", " "]),
    _hosts,
    st.sampled_from([b"", b"\n", b"\x00", b" \r\n"]),
)


@settings(max_examples=500, deadline=None)
@given(_contents, _hosts, st.booleans())
def test_any_content_is_judged_without_error(content: bytes, host: str, shared: bool) -> None:
    """lock_pid takes any bytes and any host name and answers None or a pid in range."""
    pid = lock_pid(content, host, shared=shared)
    assert pid is None or 0 < pid <= PID_MAX_LIMIT


@settings(max_examples=300, deadline=None)
@given(_pids, _hosts, st.booleans())
def test_our_lock_reads_back_as_our_pid(pid: int, host: str, shared: bool) -> None:
    """The lock we write names our pid again, on a shared file system only when it
    carries our host name."""
    content = lock_content(pid, host)
    attributed = content != f"{pid}\n".encode()
    assert lock_pid(content, host, shared=shared) == (pid if attributed or not shared else None)
    assert int(content.split(b":")[0].strip()) == pid  # what liblockfile's atoi sees


@settings(max_examples=300, deadline=None)
@given(_pids, _hosts, _hosts)
def test_another_hosts_lock_is_never_ours(pid: int, ours: str, theirs: str) -> None:
    """A lock written on another host never names a pid of this one."""
    if ours != theirs:
        content = lock_content(pid, theirs)
        if content != f"{pid}\n".encode():
            assert lock_pid(content, ours, shared=False) is None
