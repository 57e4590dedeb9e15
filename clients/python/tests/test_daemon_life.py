"""The Python client across the daemon's life: a restart under steady load fails no call that had not started
upstream; an approval asked for through a NOTICE, granted with `breakwater approve`, and the call answered."""
from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator, List

import pytest

import breakwater
from conftest import Daemon, Fake, chat, wait_until


def test_a_restart_under_load_fails_no_call_that_had_not_started(fake: Fake, daemon: Daemon) -> None:
    # 50 ms answers: at any moment some calls are upstream (they may fail, DaemonRestarted) and some are not.
    fake.personality({"name": "steady", "default_step": {"delay_first_byte_ms": 50}})
    client = breakwater.Client(daemon.socket)
    stop = threading.Event()
    answered: List[int] = []
    restarted: List[BaseException] = []
    other: List[BaseException] = []

    def load() -> None:
        while not stop.is_set():
            try:
                client.send("default", chat("steady"))
                answered.append(1)
            except breakwater.DaemonRestarted as e:
                restarted.append(e)
            except BaseException as e:  # noqa: BLE001 - reported below
                other.append(e)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(answered) >= 50)
    before = len(answered)
    daemon.kill_and_restart()
    assert wait_until(lambda: len(answered) >= before + 50), "calls go on on the new daemon"
    stop.set()
    for t in threads:
        t.join(30)
    print("restart under load: %d answered, %d DaemonRestarted (were upstream), %d other failures"
          % (len(answered), len(restarted), len(other)))
    assert not other, "a call that had not started failed: %r" % other[:3]
    assert len(restarted) <= 8, "only the calls upstream at the kill: at most one per thread"


REFUND_TOKEN = "py-test-refund-token-0123456789abcdef"
BUDGET_TOKEN = "py-test-budget-token-0123456789abcdef"


def policy(approval_timeout: str = "20s") -> str:
    digest = hashlib.sha256(REFUND_TOKEN.encode()).hexdigest()
    budget_digest = hashlib.sha256(BUDGET_TOKEN.encode()).hexdigest()
    issued = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"""\
anonymous: deny
approvers: {{uids: [0]}}
allow_self_approval: true
agents:
  refund-agent:
    agent_identity:
      owner: support
      credentials: [{{name: t1, token_sha256: {digest}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: [refund.issue], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
  budget-agent:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {budget_digest}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: ["*"], routes: ["*"], models: ["*"]}}
    relationships: [{{agent_to_tenant: "*"}}]
    budgets: {{daily: {{tokens: 10}}}}
conditional_controls:
  destructive_changes: {{actions: [refund.issue], require_approval: true, approval_timeout: {approval_timeout}}}
"""


@pytest.fixture
def governed(fake: Fake) -> Iterator[Daemon]:
    d = Daemon(fake, policy=policy())
    yield d
    d.stop()


def test_an_approval_asked_granted_with_the_cli_and_answered(fake: Fake, governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=REFUND_TOKEN)
    notices: List[breakwater.CallNotice] = []
    result: List[object] = []

    def call() -> None:
        try:
            result.append(client.send("default", chat("refund 40 EUR"), action="refund.issue", tenant="acme",
                                      on_notice=notices.append))
        except BaseException as e:  # noqa: BLE001 - checked below
            result.append(e)

    t = threading.Thread(target=call)
    t.start()
    assert wait_until(lambda: bool(notices)), "a NOTICE says the call waits for an approval"
    notice = notices[0]
    assert notice.kind == "pending_approval" and notice.approval_id
    assert fake.stats()["requests"] == 0, "nothing reaches the provider before the approval"
    listed = governed.cli("approvals")
    assert notice.approval_id in listed.stdout, listed.stdout + listed.stderr
    approved = governed.cli("approve", notice.approval_id)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    t.join(20)
    assert result and isinstance(result[0], breakwater.Completion), result
    assert fake.stats()["requests"] == 1


def test_a_call_outside_the_agents_scope_is_forbidden(governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=REFUND_TOKEN)
    with pytest.raises(breakwater.Forbidden) as e:
        client.send("default", chat("export"), action="user.export", tenant="acme")
    assert e.value.code == breakwater.ErrorCode.FORBIDDEN


def test_a_denied_approval_is_approval_denied(fake: Fake, governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=REFUND_TOKEN)
    notices: List[breakwater.CallNotice] = []
    errors: List[BaseException] = []

    def call() -> None:
        try:
            client.send("default", chat("refund"), action="refund.issue", tenant="acme", on_notice=notices.append)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    assert wait_until(lambda: bool(notices))
    denied = governed.cli("deny", str(notices[0].approval_id))
    assert denied.returncode == 0, denied.stdout + denied.stderr
    t.join(20)
    assert len(errors) == 1 and isinstance(errors[0], breakwater.ApprovalDenied), errors
    assert fake.stats()["requests"] == 0


def test_an_approval_nobody_gives_expires(fake: Fake) -> None:
    d = Daemon(fake, policy=policy(approval_timeout="1s"))
    try:
        client = breakwater.Client(d.socket, credential=REFUND_TOKEN)
        with pytest.raises(breakwater.ApprovalExpired):
            client.send("default", chat("refund"), action="refund.issue", tenant="acme")
    finally:
        d.stop()


def test_a_spent_budget_is_budget_exceeded(governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=BUDGET_TOKEN)
    with pytest.raises(breakwater.BudgetExceeded) as e:
        for _ in range(3):  # the first call may fit the 10 tokens' estimate; its usage spends the rest
            client.send("default", chat("spend"), action="report.read", tenant="acme")
    assert e.value.code == breakwater.ErrorCode.BUDGET_EXCEEDED
