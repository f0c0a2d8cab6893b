"""Properties of the SMTP client: any server bytes, any chunking, every state and reply kind."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.credentials import Credentials
from dma.core.errors import DmaError
from dma.core.smtp import (
    _HANDLERS,
    CALLS,
    TRANSITIONS,
    Action,
    Call,
    Closed,
    Envelope,
    Event,
    LocalProtocolError,
    MessageDone,
    Outcome,
    Ready,
    ReadyForData,
    ReplyKind,
    SessionFailed,
    SessionPolicy,
    SmtpClient,
    Stage,
    StartTls,
    State,
    Transmit,
)
from dma.core.smtp_reply import RemoteProtocolError, Reply, ReplyParser

PASSWORD = "pa55-w0rd-secret"
TOKEN = "ya29.access-token-secret"
NONCE = "fyko+d2lbbFgONRv9qkxdawL"

# --- strategies --------------------------------------------------------------------------

_EHLOS = [
    b"250-mx\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-SIZE 100\r\n"
    b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n",
    b"250-mx\r\n250-STARTTLS\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n",
    b"250-mx\r\n250-PIPELINING\r\n250 AUTH=LOGIN\r\n",
    b"250-mx\r\n250 AUTH XOAUTH2\r\n",
    b"250-mx\r\n250 AUTH OAUTHBEARER SCRAM-SHA-1 SCRAM-SHA-256\r\n",
    b"250 mx\r\n",
]
_REPLIES = [
    b"220 hi\r\n", b"221 bye\r\n", b"235 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n",
    b"251 forwarded\r\n", b"334 VXNlcm5hbWU6\r\n",
    b"334 " + base64.b64encode(b"<1.2@mx>") + b"\r\n", b"334 !!\r\n", b"354 go\r\n",
    b"421 4.7.0 bye\r\n", b"450 4.2.1 later\r\n", b"451 4.3.0 later\r\n", b"500 what\r\n",
    b"502 no\r\n", b"530 5.7.0 auth\r\n", b"535 5.7.8 bad\r\n", b"550 5.1.1 no\r\n",
    b"552 5.3.4 big\r\n", b"554 no\r\n", b"250-a\r\n251 b\r\n", b"garbage\r\n", b"250-partial",
    b"334 \r\n", b"334 " + base64.b64encode(b"r=" + NONCE.encode() + b"xyz,s=c2FsdA==,i=4096")
    + b"\r\n", b"334 " + base64.b64encode(b"v=AAAA") + b"\r\n",
    b"334 " + base64.b64encode(b'{"status":"401","schemes":"bearer"}') + b"\r\n",
    b"501 5.7.0 cancelled\r\n", b"235 2.7.0 " + base64.b64encode(b"v=AAAA") + b"\r\n",
    *_EHLOS,
]
replies_bytes = st.lists(
    st.one_of(st.sampled_from(_REPLIES), st.binary(max_size=12)), max_size=30
).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty chunks dropped: b"" means end of stream)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if a < b]


policies = st.builds(
    SessionPolicy,
    helo_name=st.just("client.example"),
    starttls=st.sampled_from(["no", "required", "opportunistic"]),
    tls_active=st.booleans(),
    credentials=st.sampled_from([
        None, Credentials("user", PASSWORD), Credentials("user", TOKEN, "oauth2"),
        Credentials("user", PASSWORD, "password", "SCRAM-SHA-1"),
        Credentials("user", TOKEN, "oauth2", "OAUTHBEARER"),
    ]),
    insecure=st.booleans(),
    nonce=st.just(NONCE),
    server_name=st.sampled_from([None, "mx.example"]),
    server_port=st.sampled_from([None, 587]),
)
_addresses = st.sampled_from(["a@x.example", "b@y.example", "jörg@z.example", "c@x.example"])
envelopes = st.builds(
    Envelope,
    sender=st.sampled_from(["", "s@x.example", "sö@x.example"]),
    recipients=st.lists(_addresses, min_size=1, max_size=4).map(tuple),
    size=st.integers(0, 300),
    eight_bit=st.booleans(),
    dsn_notify=st.sampled_from([None, "NEVER", "success,delay"]),
    dsn_ret=st.sampled_from([None, "FULL"]),
    dsn_envid=st.sampled_from([None, "q1 +="]),
)
body_chunks = st.lists(
    st.one_of(
        st.sampled_from([b".", b"\n", b"\r", b"\r\n", b".\r\n", b"x"]), st.binary(max_size=6)
    ),
    max_size=20,
)


# --- the whole machine under arbitrary server input ----------------------------------------


def run_session(
    policy: SessionPolicy,
    source: list[bytes] | Callable[[State], bytes | None],
    messages: list[tuple[Envelope, list[bytes]]],
) -> tuple[list[Event], list[tuple[Envelope, MessageDone]], bytes]:
    """Drive the client like the shell does; return events, (envelope, outcome) pairs, writes.

    ``source`` is the server: fixed chunks, or a function of the client's state that
    returns the next chunk (None: the server closes the connection).
    """
    client = SmtpClient(policy)
    events: list[Event] = []
    done: list[tuple[Envelope, MessageDone]] = []
    writes: list[bytes] = []
    queue = list(messages)
    pending = source if isinstance(source, list) else None
    current: tuple[Envelope, list[bytes]] | None = None
    eof = False
    for _ in range(10_000):
        event = client.next_event()
        if event is None:
            assert not eof, f"stuck in {client.state} after end of stream"
            if pending is not None:
                chunk = pending.pop(0) if pending else None
            else:
                assert callable(source)
                chunk = source(client.state)
            if chunk is None:
                eof = True
            client.receive_data(chunk or b"")
            continue
        events.append(event)
        if isinstance(event, Transmit):
            writes.append(event.data)
        elif isinstance(event, StartTls):
            writes.append(client.tls_established())
        elif isinstance(event, (Ready, MessageDone)):
            if isinstance(event, MessageDone):
                assert current is not None
                done.append((current[0], event))
                current = None
            if queue and client.can_send_message:
                current = queue.pop(0)
                writes.append(client.send_message(current[0]))
            else:
                writes.append(client.quit())
        elif isinstance(event, ReadyForData):
            assert current is not None
            writes.extend(client.send_data_lines(current[1]))
        elif isinstance(event, SessionFailed):
            writes.append(client.quit())
        elif isinstance(event, Closed):
            assert client.next_event() is None
            return events, done, b"".join(writes)
    raise AssertionError("session did not end")


def check_session(
    events: list[Event], done: list[tuple[Envelope, MessageDone]], sent_messages: int
) -> None:
    """The invariants of every session, whatever the server did."""
    assert isinstance(events[-1], Closed)
    assert sum(isinstance(e, Closed) for e in events) == 1
    assert len(done) == sum(isinstance(e, MessageDone) for e in events) <= sent_messages
    for envelope, message in done:
        assert tuple(r.recipient for r in message.results) == envelope.recipients
        for result in message.results:
            if result.outcome is Outcome.DELIVERED:
                assert result.stage is Stage.DATA_END
                assert result.reply is not None and result.reply.code // 100 == 2
    for event in events:
        if isinstance(event, SessionFailed):
            assert event.outcome is Outcome.TEMPORARY and event.reason
    assert PASSWORD not in repr(events) and TOKEN not in repr(events)


# A mostly cooperative server: the replies each state hopes for, then anything at all.
_CHALLENGE = b"334 " + base64.b64encode(b"<1.2@mx>") + b"\r\n"
GOOD: dict[State, list[bytes]] = {
    State.GREETING: [b"220 hi\r\n"],
    State.EHLO: _EHLOS,
    State.HELO: [b"250 hello\r\n"],
    State.STARTTLS: [b"220 go\r\n"],
    State.AUTH: [_CHALLENGE, b"334 VXNlcm5hbWU6\r\n", b"235 ok\r\n", b"535 5.7.8 no\r\n"],
    State.AUTH_ENDING: [b"501 5.7.0 cancelled\r\n", b"535 5.7.8 bad token\r\n"],
    State.RSET: [b"250 reset\r\n"],
    State.MAIL: [b"250 ok\r\n"],
    State.RCPT: [b"250 ok\r\n", b"251 fwd\r\n", b"550 5.1.1 no\r\n", b"450 later\r\n"],
    State.DATA: [b"354 go\r\n"],
    State.SENDING_DATA: [b"552 early\r\n"],
    State.DATA_END: [b"250 queued\r\n", b"552 5.3.4 big\r\n", b"451 later\r\n"],
    State.QUIT: [b"221 bye\r\n"],
}


def cooperative_server(data: st.DataObject) -> Callable[[State], bytes | None]:
    """A server that mostly answers what the client's state expects, drawn by hypothesis."""
    budget = [40]

    def answer(state: State) -> bytes | None:
        budget[0] -= 1
        roll = data.draw(st.integers(0, 19))
        if budget[0] < 0 or roll == 19:
            return None
        good = GOOD.get(state, _REPLIES)
        if roll < 17:
            return data.draw(st.sampled_from(good))
        if roll == 17:  # half a reply: the rest never comes
            reply = data.draw(st.sampled_from(good))
            return reply[: data.draw(st.integers(1, len(reply)))]
        return data.draw(st.one_of(st.sampled_from(_REPLIES), st.binary(min_size=1, max_size=8)))

    return answer


@settings(max_examples=200, deadline=None)
@given(st.data(), policies, replies_bytes, st.lists(st.tuples(envelopes, body_chunks), max_size=3))
def test_any_server_bytes_end_in_closed_with_every_message_settled(
    data: st.DataObject,
    policy: SessionPolicy,
    stream: bytes,
    messages: list[tuple[Envelope, list[bytes]]],
) -> None:
    """Whatever bytes the server sends, in any chunking: no exception, one Closed at the end,
    every message settled at most once with a final result per recipient, no secret shown."""
    events, done, _ = run_session(policy, data.draw(chunked(stream)), messages)
    check_session(events, done, len(messages))


@settings(max_examples=200, deadline=None)
@given(st.data(), policies, st.lists(st.tuples(envelopes, body_chunks), max_size=3))
def test_mostly_cooperative_servers_keep_every_invariant(
    data: st.DataObject, policy: SessionPolicy, messages: list[tuple[Envelope, list[bytes]]]
) -> None:
    """A server that mostly answers as hoped, sometimes not: deep sessions keep the invariants."""
    events, done, _ = run_session(policy, cooperative_server(data), messages)
    check_session(events, done, len(messages))


@settings(max_examples=200, deadline=None)
@given(policies, replies_bytes, st.lists(st.tuples(envelopes, body_chunks), max_size=2))
def test_chunking_never_changes_the_session(
    policy: SessionPolicy, stream: bytes, messages: list[tuple[Envelope, list[bytes]]]
) -> None:
    """The same server bytes fed whole or byte by byte give the same events and writes,
    except where the STARTTLS injection check sees bytes that arrived together."""
    whole = run_session(policy, [stream] if stream else [], messages)
    bytewise = run_session(policy, [bytes([b]) for b in stream], messages)
    if any(isinstance(e, StartTls) for e in bytewise[0]):
        return  # whole-stream delivery rightly looks like injection after STARTTLS
    assert whole[0] == bytewise[0] and whole[2] == bytewise[2]


# --- every state meets every kind of reply --------------------------------------------------

CREDENTIALS = Credentials("user", PASSWORD)
ENV = Envelope("a@x.example", ("b@y.example", "c@y.example"), 10, False)

# How to reach each state: a policy and the server bytes that get the client there.
_G, _E = b"220 hi\r\n", b"250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n"
REACH: dict[State, tuple[SessionPolicy, bytes, str]] = {
    State.GREETING: (SessionPolicy("c", "no", False), b"", ""),
    State.EHLO: (SessionPolicy("c", "no", False), _G, ""),
    State.HELO: (SessionPolicy("c", "no", False), _G + b"502 no\r\n", ""),
    State.STARTTLS: (SessionPolicy("c", "required", False), _G + _E, ""),
    State.AUTH: (SessionPolicy("c", "no", True, CREDENTIALS, nonce=NONCE), _G + _E, ""),
    State.AUTH_ENDING: (SessionPolicy("c", "no", True, CREDENTIALS, nonce=NONCE),
                        _G + _E + b"334 x\r\n334 y\r\n334 z\r\n", ""),
    State.READY: (SessionPolicy("c", "no", False), _G + _E, ""),
    State.RSET: (SessionPolicy("c", "no", False), _G + _E, "dirty"),
    State.MAIL: (SessionPolicy("c", "no", False), _G + _E, "send"),
    State.RCPT: (SessionPolicy("c", "no", False), _G + _E, "send+mail"),
    State.DATA: (SessionPolicy("c", "no", False), _G + _E, "send+data"),
    State.SENDING_DATA: (SessionPolicy("c", "no", False), _G + _E, "send+354"),
    State.DATA_END: (SessionPolicy("c", "no", False), _G + _E, "send+dot"),
    State.QUIT: (SessionPolicy("c", "no", False), _G + _E, "quit"),
}
KIND_SAMPLES = {
    ReplyKind.POSITIVE: [b"250 ok\r\n", b"220 x\r\n", b"235 ok\r\n"],
    ReplyKind.INTERMEDIATE: [b"354 go\r\n", b"334 VXNlcg==\r\n", b"334 !!\r\n"],
    ReplyKind.TRANSIENT: [b"450 later\r\n", b"451 4.7.1 slow\r\n"],
    ReplyKind.PERMANENT: [b"550 no\r\n", b"502 no\r\n", b"554-a\r\n554 b\r\n"],
    ReplyKind.SHUTDOWN: [b"421 bye\r\n"],
}


def drain(client: SmtpClient) -> list[Event]:
    """All events available now."""
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


def reach(state: State) -> SmtpClient:
    """A client sitting in ``state``."""
    policy, server, plan = REACH[state]
    client = SmtpClient(policy)
    if server:
        client.receive_data(server)
    drain(client)
    if plan == "dirty":
        client.send_message(ENV)
        client.receive_data(b"250 ok\r\n550 no\r\n550 no\r\n")
        drain(client)
        client.send_message(ENV)
    elif plan.startswith("send"):
        client.send_message(ENV)
        steps = {
            "send": b"",
            "send+mail": b"250 ok\r\n",
            "send+data": b"250 ok\r\n250 ok\r\n250 ok\r\n",
            "send+354": b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            "send+dot": b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
        }
        if steps[plan]:
            client.receive_data(steps[plan])
        drain(client)
        if plan == "send+dot":
            list(client.send_data_lines([b"x\n"]))
    elif plan == "quit":
        client.quit()
    assert client.state is state
    return client


@pytest.mark.parametrize("state", list(REACH))
@pytest.mark.parametrize("kind", list(ReplyKind))
def test_every_state_meets_every_reply_kind(state: State, kind: ReplyKind) -> None:
    """Each (state, reply kind) moves to a state the table allows, or fails the session with
    a named TEMPORARY SessionFailed; nothing else ever happens."""
    for sample in KIND_SAMPLES[kind]:
        client = reach(state)
        client.receive_data(sample)
        events = drain(client)
        transition = TRANSITIONS.get((state, kind))
        if transition is None:
            assert client.state is State.FAILED
            failed = [e for e in events if isinstance(e, SessionFailed)]
            assert len(failed) == 1 and failed[0].outcome is Outcome.TEMPORARY
            assert failed[0].reason
        else:
            assert client.state in transition.targets
            if client.state is State.FAILED:
                assert any(isinstance(e, SessionFailed) for e in events)


_SCRAM_FIRST = b"334 " + base64.b64encode(
    b"r=" + NONCE.encode() + b"srv,s=c2FsdA==,i=4096") + b"\r\n"
# AUTH in the middle of each mechanism's exchange: (credentials, EHLO, replies so far)
AUTH_POINTS = {
    "SCRAM before server-first": (Credentials("u", PASSWORD, "password", "SCRAM-SHA-256"),
                                  b"250-mx\r\n250 AUTH SCRAM-SHA-256\r\n", b""),
    "SCRAM after client-final": (Credentials("u", PASSWORD, "password", "SCRAM-SHA-1"),
                                 b"250-mx\r\n250 AUTH SCRAM-SHA-1\r\n", _SCRAM_FIRST),
    "XOAUTH2": (Credentials("u", TOKEN, "oauth2"), b"250-mx\r\n250 AUTH XOAUTH2\r\n", b""),
    "OAUTHBEARER": (Credentials("u", TOKEN, "oauth2"), b"250-mx\r\n250 AUTH OAUTHBEARER\r\n",
                    b""),
    "CRAM-MD5": (Credentials("u", PASSWORD), b"250-mx\r\n250 AUTH CRAM-MD5\r\n", b""),
    "PLAIN": (Credentials("u", PASSWORD), b"250-mx\r\n250 AUTH PLAIN\r\n", b""),
}


@pytest.mark.parametrize("point", list(AUTH_POINTS))
@pytest.mark.parametrize("kind", list(ReplyKind))
def test_every_mechanisms_exchange_meets_every_reply_kind(point: str, kind: ReplyKind) -> None:
    """In the middle of each mechanism's exchange, each reply kind moves where the table
    says; a 2xx is Ready only when the mechanism is satisfied (SCRAM never is without the
    server's signature), and a failure is a refused AUTH, TEMPORARY, with no secret."""
    credentials, ehlo, before = AUTH_POINTS[point]
    for sample in KIND_SAMPLES[kind]:
        client = SmtpClient(SessionPolicy("c", "no", True, credentials, nonce=NONCE))
        client.receive_data(_G + ehlo + before)
        drain(client)
        assert client.state is State.AUTH
        client.receive_data(sample)
        events = drain(client)
        moved: State = client.state  # (mypy narrowed it to AUTH above)
        transition = TRANSITIONS.get((State.AUTH, kind))
        assert transition is not None and moved in transition.targets
        ready = [e for e in events if isinstance(e, Ready)]
        if ready:
            assert not point.startswith("SCRAM")
        failed = [e for e in events if isinstance(e, SessionFailed)]
        if moved is State.FAILED:
            assert len(failed) == 1 and failed[0].outcome is Outcome.TEMPORARY
            assert failed[0].auth == "refused" or kind is ReplyKind.SHUTDOWN
        assert PASSWORD not in repr(events) and TOKEN not in repr(events)


def test_receive_data_in_tls_handshake_is_a_local_error() -> None:
    """The one state that refuses replies outright: bytes before tls_established are our bug."""
    client = reach(State.STARTTLS)
    client.receive_data(b"220 go\r\n")
    assert isinstance(drain(client)[0], StartTls)
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"250 ok\r\n")



# --- every state meets every call of the driver, and the tables themselves ------------------

_PIPELINING_EHLO = b"250-mx\r\n250 PIPELINING\r\n"


def reach_any(state: State, *, pipelining: bool = False) -> SmtpClient:
    """A client sitting in ``state``: the REACH states, and the handshake, FAILED and CLOSED."""
    if pipelining:
        client = SmtpClient(SessionPolicy("c", "no", False))
        client.receive_data(_G + _PIPELINING_EHLO)
        drain(client)
        client.send_message(ENV)
        client.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        drain(client)
        list(client.send_data_lines([b"x\n"]))
    elif state is State.TLS_HANDSHAKE:
        client = reach(State.STARTTLS)
        client.receive_data(b"220 go\r\n")
        drain(client)
    elif state in (State.FAILED, State.CLOSED):
        client = reach(State.READY)
        client.receive_data(b"421 bye\r\n")
        drain(client)
        if state is State.CLOSED:
            client.quit()
    else:
        client = reach(state)
    assert client.state is state
    return client


def make_call(client: SmtpClient, call: Call) -> None:
    """Make ``call`` the way a driver would (the stream's conditions through receive_data)."""
    if call is Call.RECEIVE_DATA:
        client.receive_data(b"250 ok\r\n")
    elif call is Call.SEND_MESSAGE:
        client.send_message(ENV)
    elif call in (Call.SEND_DATA, Call.END_OF_DATA):
        list(client.send_data_lines([b"x\n", b".\n"]))
    elif call is Call.TLS_ESTABLISHED:
        client.tls_established()
    elif call is Call.QUIT:
        client.quit()
    elif call is Call.END_OF_STREAM:
        client.receive_data(b"")
    else:
        client.receive_data(b"no reply\r\n")


def _targets_of(state: State, call: Call) -> frozenset[State]:
    """Where the table lets ``call`` lead from ``state`` (the data: SEND_DATA, then its end)."""
    targets = CALLS.get((state, call), frozenset())
    if call in (Call.SEND_DATA, Call.END_OF_DATA):
        targets = CALLS.get((state, Call.SEND_DATA), frozenset()) | CALLS.get(
            (state, Call.END_OF_DATA), frozenset()
        )
    return targets


_ALL_REACHABLE = [*REACH, State.TLS_HANDSHAKE, State.FAILED, State.CLOSED]


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize("state", _ALL_REACHABLE)
@pytest.mark.parametrize("call", list(Call))
def test_every_state_meets_every_call(state: State, call: Call, pipelining: bool) -> None:
    """Each (state, driver call) moves where CALLS allows, or raises LocalProtocolError and
    changes nothing; a call the table does not list is always refused."""
    if pipelining and state is not State.DATA_END:
        return
    client = reach_any(state, pipelining=pipelining)
    try:
        make_call(client, call)
    except DmaError as error:
        assert type(error) is LocalProtocolError, error
        assert client.state is state
        return
    moved = client.state
    if call in (Call.RECEIVE_DATA, Call.END_OF_STREAM, Call.BAD_REPLY):
        assert (state, Call.RECEIVE_DATA) in CALLS
        assert moved is state  # receive_data only buffers: the move comes with next_event
        events = drain(client)
        reading = state not in (State.TLS_HANDSHAKE, State.FAILED, State.CLOSED)
        if call is Call.RECEIVE_DATA or not reading:
            transition = TRANSITIONS.get((state, ReplyKind.POSITIVE))
            allowed = transition.targets if transition and reading else frozenset({State.FAILED})
            assert client.state in allowed | {state}
        else:
            assert client.state in CALLS[(state, call)]
            if client.state is State.FAILED:
                assert [e for e in events if isinstance(e, SessionFailed)]
        return
    assert moved in _targets_of(state, call)  # empty when the table does not list the call


def test_table_is_consistent() -> None:
    """Every action has a handler, every entry leads somewhere, every state that is not
    terminal has a way on, and CLOSED is reachable from every state."""
    assert set(_HANDLERS) == set(Action)
    assert {t.action for t in TRANSITIONS.values()} | {Action.UNEXPECTED} == set(Action)
    edges: dict[State, set[State]] = {state: set() for state in State}
    for (state, kind), transition in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(kind, ReplyKind)
        assert transition.targets and all(isinstance(t, State) for t in transition.targets)
        edges[state] |= transition.targets
    for (state, call), targets in CALLS.items():
        assert isinstance(call, Call)
        assert targets and all(isinstance(t, State) for t in targets)
        edges[state] |= targets
    for state in State:
        if state is not State.CLOSED:
            assert edges[state] - {state}, f"{state.name} has no way on"
    assert edges[State.CLOSED] <= {State.CLOSED}
    for state in State:  # CLOSED is reachable from everywhere
        seen, todo = {state}, [state]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert State.CLOSED in seen, state.name
    assert {call for _, call in CALLS} == set(Call)


_steps = st.lists(
    st.one_of(
        st.sampled_from(list(Call)),
        st.sampled_from([b"220 hi\r\n", b"250 ok\r\n", b"354 go\r\n", b"421 bye\r\n",
                         b"450 later\r\n", b"550 no\r\n", b"334 VXNlcg==\r\n",
                         _PIPELINING_EHLO, _E]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(policies, _steps)
def test_any_sequence_of_calls_and_replies_raises_only_our_error(
    policy: SessionPolicy, steps: list[Call | bytes]
) -> None:
    """Any order of driver calls and replies: every change follows the tables (else the
    machine's own check raises SoftwareError), nothing raises but LocalProtocolError, and no
    byte waits in the outbox between steps."""
    client = SmtpClient(policy)
    for step in steps:
        before = client.state
        try:
            if isinstance(step, bytes):
                client.receive_data(step)
            else:
                make_call(client, step)
            drain(client)
        except DmaError as error:
            assert type(error) is LocalProtocolError, error
            assert client.state is before
        assert not client._outbox


# --- the reply parser -------------------------------------------------------------------

_codes = st.integers(200, 599)
_texts = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30
).map(str.rstrip)
replies = st.builds(
    lambda code, lines: Reply(code, tuple(lines)),
    _codes,
    st.lists(_texts, min_size=1, max_size=4),
)


def render(reply: Reply) -> bytes:
    """The wire form of ``reply``."""
    out = []
    for i, line in enumerate(reply.lines):
        sep = "-" if i < len(reply.lines) - 1 else " "
        out.append(f"{reply.code}{sep}{line}\r\n".encode())
    return b"".join(out)


def parse_all(chunks: list[bytes]) -> tuple[list[Reply], bool]:
    """Replies from ``chunks`` and whether the parser raised."""
    parser = ReplyParser()
    got: list[Reply] = []
    try:
        for chunk in chunks:
            got.extend(parser.feed(chunk))
        assert parser.next_reply() is None
    except RemoteProtocolError:
        return got, True
    return got, False


@settings(max_examples=200, deadline=None)
@given(st.data(), st.lists(replies, max_size=6))
def test_rendered_replies_parse_back(data: st.DataObject, originals: list[Reply]) -> None:
    """Replies written to the wire and cut anywhere come back with the same codes and lines."""
    stream = b"".join(render(r) for r in originals)
    got, failed = parse_all(data.draw(chunked(stream)))
    assert not failed
    assert [(r.code, r.lines) for r in got] == [(r.code, r.lines) for r in originals]


@settings(max_examples=200, deadline=None)
@given(st.data(), replies_bytes)
def test_parser_gives_the_same_replies_for_any_chunking(data: st.DataObject, stream: bytes) -> None:
    """Any bytes, cut anywhere: the same replies and the same verdict as fed whole."""
    assert parse_all(data.draw(chunked(stream))) == parse_all([stream])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_parser_raises_nothing_but_our_error(stream: bytes) -> None:
    """Arbitrary bytes either parse or raise RemoteProtocolError, a DmaError."""
    try:
        ReplyParser().feed(stream)
    except DmaError as error:
        assert isinstance(error, RemoteProtocolError)


# --- the data on the wire ------------------------------------------------------------------


def data_bytes(chunks: list[bytes]) -> bytes:
    """The DATA bytes the client sends for ``chunks``."""
    client = reach(State.SENDING_DATA)
    return b"".join(client.send_data_lines(chunks))


@settings(max_examples=200, deadline=None)
@given(body_chunks)
def test_data_never_has_bare_line_ends_or_an_early_dot(chunks: list[bytes]) -> None:
    """Wire data: only CRLF line ends, a lone "." only at the very end, and unstuffing gives
    the input back with every CR, LF and CRLF as one line end."""
    wire = data_bytes(chunks)
    assert wire.endswith(b".\r\n")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    assert b"." not in lines[:-2]
    unstuffed = [line[1:] if line.startswith(b".") else line for line in lines[:-2]]
    text = b"".join(chunks).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    expected = text.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert unstuffed == expected


@settings(max_examples=100, deadline=None)
@given(st.data(), body_chunks)
def test_data_does_not_depend_on_chunking(data: st.DataObject, chunks: list[bytes]) -> None:
    """The same message cut differently goes on the wire identically."""
    joined = b"".join(chunks)
    assert data_bytes(data.draw(chunked(joined))) == data_bytes([joined])

