"""Tool calls in scope on LLM traffic (issue 14, item 3, the request side): tools the agent may not use are taken out
of the request before it reaches the provider — the fake counts the tools it was offered — or the call is refused,
as the policy says; each is audited (`tool_call_blocked`)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import pytest

import breakwater
from conftest import Daemon, Fake

TOKEN = "py-test-tools-token-0123456789abcdef"


def policy(disallowed: str) -> str:
    issued = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return f"""\
anonymous: deny
agents:
  support-agent:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {digest}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: [chat.reply, refund.issue, order.*], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
tool_actions:
  issue_refund: refund.issue
  delete_account: account.delete
disallowed_tools: {disallowed}
"""


def tool(name: str) -> Dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": {"type": "object"}}}


def body(tools: List[str]) -> Dict[str, Any]:
    return {"messages": [{"role": "user", "content": "help"}], "tools": [tool(t) for t in tools],
            "tool_choice": "auto"}


def test_tools_outside_the_agents_scope_are_removed_before_the_provider_sees_them(fake: Fake) -> None:
    d = Daemon(fake, policy=policy("remove"))
    try:
        client = breakwater.Client(d.socket, credential=TOKEN)
        # issue_refund → refund.issue (in scope); order.lookup is its own action (order.* in scope);
        # delete_account → account.delete and wipe_disk are not.
        answer = client.send("default", body(["issue_refund", "delete_account", "order.lookup", "wipe_disk"]),
                             action="chat.reply", tenant="acme")
        assert answer.response["choices"][0]["message"]["content"]
        assert fake.stats()["tools_offered"] == {"issue_refund": 1, "order.lookup": 1}
        # Every tool out of scope: the request goes without tools (and without tool_choice).
        client.send("default", body(["delete_account"]), action="chat.reply", tenant="acme")
        assert fake.stats()["tools_offered"] == {"issue_refund": 1, "order.lookup": 1}
        assert fake.stats()["requests"] == 2
    finally:
        d.stop()


def test_a_policy_can_refuse_the_call_instead(fake: Fake) -> None:
    d = Daemon(fake, policy=policy("refuse"))
    try:
        client = breakwater.Client(d.socket, credential=TOKEN)
        with pytest.raises(breakwater.Forbidden) as e:
            client.send("default", body(["issue_refund", "delete_account"]), action="chat.reply", tenant="acme")
        assert "delete_account" in str(e.value) and "issue_refund" not in str(e.value)
        assert fake.stats()["requests"] == 0
        client.send("default", body(["issue_refund"]), action="chat.reply", tenant="acme")
        assert fake.stats()["tools_offered"] == {"issue_refund": 1}
    finally:
        d.stop()


def test_a_model_answer_calling_a_tool_out_of_scope_fails_the_call(fake: Fake) -> None:
    d = Daemon(fake, policy=policy("remove"))
    try:
        client = breakwater.Client(d.socket, credential=TOKEN)
        # In scope: passes untouched.
        fake.script({"tool_call": "issue_refund"})
        answer = client.send("default", body(["issue_refund"]), action="chat.reply", tenant="acme")
        call = answer.response["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["name"] == "issue_refund" and call["function"]["arguments"] == "{}"
        # Out of scope (the model asks for a tool it was never offered): TOOL_CALL_BLOCKED, plain...
        fake.script({"tool_call": "delete_account"})
        with pytest.raises(breakwater.ToolCallBlocked) as e:
            client.send("default", body(["issue_refund"]), action="chat.reply", tenant="acme")
        assert e.value.code == breakwater.ErrorCode.TOOL_CALL_BLOCKED and "delete_account" in str(e.value)
        # ... and streamed: the chunk naming it never reaches the app; the stream ends with the error.
        fake.script({"tool_call": "delete_account"})
        got: List[Dict[str, Any]] = []
        with pytest.raises(breakwater.ToolCallBlocked):
            for chunk in client.stream("default", body(["issue_refund"]), action="chat.reply", tenant="acme"):
                got.append(chunk)
        assert not any("tool_calls" in c["choices"][0]["delta"] for c in got if c.get("choices")), got
        fake.script({"tool_call": "order.lookup"})
        streamed = list(client.stream("default", body(["order.lookup"]), action="chat.reply", tenant="acme"))
        names = [tc["function"].get("name") for c in streamed if c.get("choices")
                 for tc in c["choices"][0]["delta"].get("tool_calls", [])]
        assert "order.lookup" in names
        # Without a policy nothing is checked.
    finally:
        d.stop()


def test_without_a_policy_tool_calls_pass(fake: Fake, daemon: Daemon) -> None:
    fake.script({"tool_call": "delete_account"})
    answer = breakwater.Client(daemon.socket).send("default", body(["delete_account"]))
    assert answer.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "delete_account"
    assert fake.stats()["tools_offered"] == {"delete_account": 1}


def test_policy_check_answers_for_tools(fake: Fake) -> None:
    d = Daemon(fake, policy=policy("remove"))
    try:
        def check(tool_name: str) -> Dict[str, Any]:
            import json
            out = d.cli("policy", "check", "--agent", "support-agent", "--tool", tool_name, "--json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        assert check("issue_refund") == {**check("issue_refund"), "decision": "allow", "action": "refund.issue"}
        denied = check("delete_account")
        assert denied["decision"] == "deny" and denied["action"] == "account.delete"
        assert "TOOL_CALL_BLOCKED" in denied["detail"]
        assert check("order.lookup")["decision"] == "allow"
        human = d.cli("policy", "check", "--agent", "support-agent", "--tool", "wipe_disk").stdout
        assert "decision: deny" in human and "removed from requests" in human, human
        assert fake.stats()["requests"] == 0
    finally:
        d.stop()
