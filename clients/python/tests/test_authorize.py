"""AUTHORIZE: the app asks before it executes an action, and the daemon's policy answers — approvals bound to the exact
arguments (single-use, or reusable for a window), step-up and rate limits as for calls, scopes before any approval.
A real daemon, the real `breakwater` CLI in other processes as the approver."""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional

import pytest

import breakwater
from conftest import Daemon, Fake, bin_dir, wait_until

AGENT_TOKEN = "py-test-actions-token-0123456789abcdef"
READER_TOKEN = "py-test-reader-token-0123456789abcdef"
STEP_UP = "py-test-step-up-token-0123456789abcdef"
SECRET_NOTE = "customer-said-the-password-is-hunter2"


def policy() -> str:
    def h(t: str) -> str:
        return hashlib.sha256(t.encode()).hexdigest()
    issued = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"""\
anonymous: deny
approvers: {{uids: [0]}}
allow_self_approval: true
agents:
  support-agent:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {h(AGENT_TOKEN)}, issued_at: {issued}, validity_window: 1h}}]
      step_up_credentials: [{{name: s1, token_sha256: {h(STEP_UP)}, issued_at: {issued}}}]
    scopes: {{actions: [refund.issue, invoice.void, user.export, email.send], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
  reader-agent:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {h(READER_TOKEN)}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: [report.read], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
conditional_controls:
  destructive_changes:
    actions: [refund.issue]
    require_approval: true
    approval_timeout: 20s
    show_arguments: [amount, invoice]
  voids:
    actions: [invoice.void]
    require_approval: true
    approval_timeout: 20s
    approval_reusable_for: 2s
  sensitive_data: {{actions: [user.export], step_up_auth: true, max_age: 10m}}
  high_risk_actions: {{actions: [email.send], rate_limit: 1/min}}
"""


@pytest.fixture
def governed(fake: Fake) -> Iterator[Daemon]:
    d = Daemon(fake, policy=policy())
    yield d
    d.stop()


class Pending:
    """An authorize() running in a thread, waiting for its approval."""

    def __init__(self, client: breakwater.Client, action: str, arguments: Dict[str, Any]) -> None:
        self.notices: List[breakwater.CallNotice] = []
        self.result: List[Any] = []

        def run() -> None:
            try:
                self.result.append(client.authorize(action, tenant="acme", arguments=arguments,
                                                    on_notice=self.notices.append))
            except BaseException as e:  # noqa: BLE001 - checked by the test
                self.result.append(e)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def approval_id(self) -> str:
        assert wait_until(lambda: bool(self.notices) or bool(self.result), 10), "neither a notice nor an answer"
        assert self.notices, "answered without asking: %r" % self.result
        assert self.notices[0].kind == "pending_approval" and self.notices[0].approval_id
        return str(self.notices[0].approval_id)

    def outcome(self) -> Any:
        self.thread.join(20)
        assert self.result, "no answer"
        return self.result[0]


def approvals(d: Daemon) -> List[Dict[str, Any]]:
    out = d.cli("approvals", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["pending"]  # type: ignore[no-any-return]


def test_an_approval_is_bound_to_the_exact_arguments_and_single_use(fake: Fake, governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=AGENT_TOKEN)
    refund = {"amount": 40, "invoice": "1182", "note": SECRET_NOTE}
    first = Pending(client, "refund.issue", refund)
    approval = first.approval_id()
    # The approver sees the action, tenant, agent and the fields the policy shows — not the others.
    listed = approvals(governed)
    assert [p["id"] for p in listed] == [approval]
    assert listed[0]["action"] == "refund.issue" and listed[0]["tenant"] == "acme"
    assert listed[0]["agent"] == "support-agent"
    assert listed[0]["arguments"] == {"amount": "40", "invoice": '"1182"'}
    table = governed.cli("approvals").stdout
    assert "amount=40" in table and 'invoice="1182"' in table and "(others redacted)" in table, table
    assert SECRET_NOTE not in json.dumps(listed) + table
    approved = governed.cli("approve", approval)
    assert approved.returncode == 0, approved.stderr
    decision = first.outcome()
    assert isinstance(decision, breakwater.ActionDecision), decision
    assert decision.approval_id == approval and decision.decision_id.startswith("dec-")
    canonical = json.dumps(refund, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert decision.argument_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert fake.stats()["requests"] == 0, "no LLM call is involved"

    # Other arguments: the approval does not cover them; a new one is asked.
    bigger = Pending(client, "refund.issue", {"amount": 4000, "invoice": "1182"})
    second = bigger.approval_id()
    assert second != approval
    assert governed.cli("deny", second, "--reason", "too much").returncode == 0
    denied = bigger.outcome()
    assert isinstance(denied, breakwater.ApprovalDenied), denied

    # The same arguments again: single-use by default, so it asks again.
    again = Pending(client, "refund.issue", refund)
    third = again.approval_id()
    assert third not in (approval, second)
    assert governed.cli("deny", third).returncode == 0
    assert isinstance(again.outcome(), breakwater.ApprovalDenied)


def test_a_reusable_approval_allows_the_same_arguments_within_its_window_only(governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=AGENT_TOKEN)
    void = {"invoice": "77"}
    first = Pending(client, "invoice.void", void)
    approval = first.approval_id()
    assert governed.cli("approve", approval).returncode == 0
    assert isinstance(first.outcome(), breakwater.ActionDecision)
    started = time.monotonic()
    notices: List[breakwater.CallNotice] = []
    reused = client.authorize("invoice.void", tenant="acme", arguments=void, on_notice=notices.append)
    assert time.monotonic() - started < 2
    assert reused.approval_id == approval and not notices, "allowed at once by the approval it reuses"
    # Other arguments are not covered, even within the window.
    other = Pending(client, "invoice.void", {"invoice": "78"})
    assert governed.cli("deny", other.approval_id()).returncode == 0
    assert isinstance(other.outcome(), breakwater.ApprovalDenied)
    # Past the window: asked again.
    time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    late = Pending(client, "invoice.void", void)
    assert late.approval_id() != approval
    assert governed.cli("deny", late.approval_id()).returncode == 0
    assert isinstance(late.outcome(), breakwater.ApprovalDenied)


def test_step_up_and_rate_limits_apply_as_to_calls(governed: Daemon) -> None:
    client = breakwater.Client(governed.socket, credential=AGENT_TOKEN)
    with pytest.raises(breakwater.StepUpRequired):
        client.authorize("user.export", tenant="acme", arguments={"user": "u-1"})
    allowed = client.authorize("user.export", tenant="acme", arguments={"user": "u-1"}, step_up_token=STEP_UP)
    assert allowed.rule.endswith("scopes.actions"), allowed
    with pytest.raises(breakwater.StepUpRequired):
        client.authorize("user.export", tenant="acme", step_up_token="not-the-step-up-token-at-all")
    client.authorize("email.send", tenant="acme", arguments={"to": "a@example.com"})
    with pytest.raises(breakwater.RateLimited) as limited:
        client.authorize("email.send", tenant="acme", arguments={"to": "b@example.com"})
    assert limited.value.retry_after is not None and limited.value.retry_after > 30


def test_an_agent_without_the_scope_is_denied_before_any_approval_is_asked(governed: Daemon) -> None:
    reader = breakwater.Client(governed.socket, credential=READER_TOKEN)
    notices: List[breakwater.CallNotice] = []
    with pytest.raises(breakwater.Forbidden) as e:
        reader.authorize("refund.issue", tenant="acme", arguments={"amount": 1}, on_notice=notices.append)
    assert "not in the scopes" in str(e.value)
    assert not notices and approvals(governed) == []
    with pytest.raises(breakwater.Forbidden):
        breakwater.Client(governed.socket, credential=AGENT_TOKEN).authorize("refund.issue", tenant="globex")
    # Arguments that are not a JSON object (the public API only sends dicts: through the CLI).
    bad = subprocess.run([str(bin_dir() / "breakwater"), "authorize", "--socket", governed.socket, "--action",
                          "email.send", "--tenant", "acme", "--arguments", "[1, 2]"],
                         capture_output=True, text=True, timeout=30, env={"BREAKWATER_TOKEN": AGENT_TOKEN})
    assert bad.returncode == 3 and "BAD_REQUEST" in bad.stderr and "JSON object" in bad.stderr, bad


def test_the_cli_for_shell_tools(governed: Daemon) -> None:
    env = {"BREAKWATER_TOKEN": AGENT_TOKEN, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([str(bin_dir() / "breakwater"), "authorize", "--socket", governed.socket, "--action",
                         "email.send", "--tenant", "acme", "--arguments", '{"to": "c@example.com"}'],
                        capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0, ok.stderr
    decision = json.loads(ok.stdout)
    assert decision["decision"] == "allow" and decision["argument_hash"] and decision["decision_id"]
    refused = subprocess.run([str(bin_dir() / "breakwater"), "authorize", "--socket", governed.socket,
                              "--action", "user.delete", "--tenant", "acme"],
                             capture_output=True, text=True, timeout=30, env=env)
    assert refused.returncode == 3 and "FORBIDDEN" in refused.stderr, refused


def test_async_authorize(governed: Daemon) -> None:
    import asyncio

    async def run() -> breakwater.ActionDecision:
        async with breakwater.AsyncClient(governed.socket, credential=AGENT_TOKEN) as client:
            return await client.authorize("user.export", tenant="acme", step_up_token=STEP_UP)

    assert asyncio.run(run()).decision_id.startswith("dec-")


def test_without_a_policy_every_action_is_allowed(daemon: Daemon) -> None:
    decision = breakwater.Client(daemon.socket).authorize("anything.at_all", arguments={"x": 1})
    assert decision.rule == "no_policy"


def test_policy_check_answers_for_actions_with_arguments(governed: Daemon) -> None:
    refund = {"amount": 40, "invoice": "1182", "note": SECRET_NOTE}
    out = governed.cli("policy", "check", "--agent", "support-agent", "--action", "refund.issue", "--tenant", "acme",
                       "--arguments", json.dumps(refund), "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["decision"] == "require_approval", answer
    canonical = json.dumps(refund, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert answer["argument_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert answer["shown_arguments"] == {"amount": "40", "invoice": '"1182"'}
    assert answer["reusable_approval"] is None
    assert any("an action, not an LLM call" in line for line in answer["trace"]), answer["trace"]
    assert SECRET_NOTE not in out.stdout
    assert approvals(governed) == [], "a dry run asks nobody"
    # After an approval that may be reused, the dry run says so.
    client = breakwater.Client(governed.socket, credential=AGENT_TOKEN)
    first = Pending(client, "invoice.void", {"invoice": "9"})
    approval = first.approval_id()
    assert governed.cli("approve", approval).returncode == 0
    first.outcome()
    again = json.loads(governed.cli("policy", "check", "--agent", "support-agent", "--action", "invoice.void",
                                    "--tenant", "acme", "--arguments", '{"invoice": "9"}', "--json").stdout)
    assert again["reusable_approval"] == approval, again
    human = governed.cli("policy", "check", "--agent", "reader-agent", "--action", "refund.issue", "--tenant",
                         "acme", "--arguments", "{}").stdout
    assert "decision: deny" in human and "argument hash:" in human, human


def test_a_pending_action_approval_survives_a_daemon_restart(fake: Fake) -> None:
    """Persisted like a call's approval: the same AUTHORIZE (request id and arguments) sent again after a restart
    waits on the approval it had, which the approver then decides; other arguments do not find it."""
    d = Daemon(fake, policy=policy(), state=True)
    try:
        client = breakwater.Client(d.socket, credential=AGENT_TOKEN)
        refund = {"amount": 40, "invoice": "1182"}
        notices: List[breakwater.CallNotice] = []
        errors: List[BaseException] = []

        def ask() -> None:
            try:
                client.authorize("refund.issue", tenant="acme", arguments=refund, request_id="refund-1182",
                                 on_notice=notices.append)
            except BaseException as e:  # noqa: BLE001 - the daemon is killed under it
                errors.append(e)

        t = threading.Thread(target=ask)
        t.start()
        assert wait_until(lambda: bool(notices))
        approval = notices[0].approval_id
        d.kill_and_restart()
        t.join(10)
        assert approvals(d)[0]["id"] == approval and approvals(d)[0]["arguments"] == {"amount": "40",
                                                                                       "invoice": '"1182"'}
        again = Pending(breakwater.Client(d.socket, credential=AGENT_TOKEN), "refund.issue", refund)
        # A new request id is a new request: it asks for its own approval.
        other = again.approval_id()
        assert other != approval
        assert d.cli("deny", other).returncode == 0
        again.outcome()
        resent: List[Any] = []
        waiting: List[breakwater.CallNotice] = []
        r = threading.Thread(target=lambda: resent.append(breakwater.Client(d.socket, credential=AGENT_TOKEN).authorize(
            "refund.issue", tenant="acme", arguments=refund, request_id="refund-1182", on_notice=waiting.append)))
        r.start()
        assert wait_until(lambda: bool(waiting))
        assert waiting[0].approval_id == approval, "the resent request waits on the approval it had"
        assert d.cli("approve", str(approval)).returncode == 0
        r.join(20)
        assert resent and resent[0].approval_id == approval
    finally:
        d.stop()
